"""What reward feedback's VAE decode costs a training step, measured on the meta device (no weights)."""

from __future__ import annotations

import functools
import json


def reward_decode(latent: tuple[int, int, int, int], frames: int, vae_model: dict, vae_bytes: int) -> dict:
    """See _reward_decode (cached: a planner's search asks often)."""
    return dict(_reward_decode(json.dumps([latent, frames, vae_model, vae_bytes], sort_keys=True)))


@functools.lru_cache(maxsize=16)
def _reward_decode(key: str) -> dict:
    """The reward pass's VAE decode of one sample's first k latent frames, measured on the meta device
    (no weights): forward FLOPs (torch's FLOP counter) and the activations one latent frame's decode
    keeps for backward (the bytes autograd saves), the first frame and a later (4-frame) one. With
    adv.reward_checkpointing the backward recomputes one latent frame at a time, so the largest of
    them is the peak; FLOPs: forward + recompute + backward = 4 forwards. `window_training_flops`: the same
    for k later frames (adv.reward_window, where the window starts past the first frame)."""
    import torch
    from diffusers import AutoencoderKLWan
    from torch.utils.flop_counter import FlopCounterMode

    from apt.models.vae import VideoVAE

    (c, _, h, w), k, vae_model, vae_bytes = json.loads(key)
    with torch.device("meta"):
        vae = VideoVAE(AutoencoderKLWan(**vae_model))  # float32; the saved bytes are scaled to vae_bytes

    def saved_and_flops(frames: int) -> tuple[int, float]:
        saved = []

        def pack(t):
            saved.append(t.numel() * (vae_bytes if t.is_floating_point() else t.element_size()))
            return t

        z = torch.zeros(1, c, frames, h, w, device="meta", requires_grad=True)
        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            vae.decode_with_grad(z, checkpointing=False)
        return sum(saved), counter.get_total_flops()

    first, first_flops = saved_and_flops(1)
    two, two_flops = saved_and_flops(2)  # a later latent frame decodes to 4 frames: it costs more
    later_flops = two_flops - first_flops
    flops = first_flops + (k - 1) * later_flops
    return {"first_frame_bytes": first, "later_frame_bytes": two - first, "forward_flops": flops,
            "training_flops": 4 * flops, "later_frame_forward_flops": later_flops,
            "window_training_flops": 4 * k * later_flops}
