"""Seconds for one clip served in one step, by arithmetic: the text encoder, the DiT split by sequence
over the GPUs, and the VAE (or fast decoder) decode in one tile per GPU, at stated fractions of an
H100's dense bf16 peak (an estimate to set beside measured figures: scripts/benchmark_gpu.py)."""

from __future__ import annotations

from apt.planning.estimate import H100_BF16_FLOPS, WAN_TEXT_TOKENS
from apt.training.flops import forward_flops

UMT5_XXL_LAYER_PARAMS = 4 * 4096 * 4096 + 3 * 4096 * 10240  # attention q/k/v/o + gated FFN, per layer
UMT5_XXL_LAYERS = 24


def tile_area_factor(latent_h: int, latent_w: int, rows: int, cols: int, overlap: int = 8) -> float:
    """Decoded area of a rows x cols tile grid (VideoVAE.decode_tiles' geometry) over the clip's area:
    the work the overlaps add."""
    from apt.models.vae import tile_windows

    sh, sw, oh, ow, starts = tile_windows(latent_h, latent_w, rows, cols, overlap)
    area = sum(min(sh + oh, latent_h - i) * min(sw + ow, latent_w - j) for i, j in starts)
    return area / (latent_h * latent_w)


def decoder_flops(latent_shape: tuple[int, int, int, int], fast: bool = False) -> float:
    """Forward FLOPs of decoding one latent (C, T, h, w) with Wan 2.1's VAE decoder or the default fast
    decoder for it, counted on the meta device (torch's FLOP counter; no weights)."""
    import torch
    from diffusers import AutoencoderKLWan
    from torch.utils.flop_counter import FlopCounterMode

    from apt.models.fast_decoder import FastDecoder, config_for_vae
    from apt.models.vae import VideoVAE

    with torch.device("meta"):
        vae = VideoVAE(AutoencoderKLWan())
        model = FastDecoder(config_for_vae(vae.vae.config)) if fast else vae
        z = torch.zeros(1, *latent_shape)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(z) if fast else vae.decode_with_grad(z, checkpointing=False)
    return counter.get_total_flops()


def serving_estimate(model: dict, gpus: int, frames: int = 49, height: int = 720, width: int = 1280,
                     dit_mfu: float = 0.4, decode_mfu: float = 0.2, text_tokens: int = WAN_TEXT_TOKENS,
                     teacher_steps: int = 25) -> dict:
    """Seconds for one clip by arithmetic: the text encoder (umT5-XXL, replicated on every GPU), the DiT
    split by sequence over `gpus` (communication not counted), the decode in one tile per GPU (the
    overlap's extra work counted) at the stated fractions of an H100's dense bf16 peak. An estimate to
    set beside measured figures, not a measurement."""
    from apt.models.vae import rank_tile_grid

    latent = (16, (frames - 1) // 4 + 1, height // 8, width // 8)
    tokens = latent[1] * latent[2] * latent[3] // 4
    dit = forward_flops(tokens, model, model["num_layers"], text_tokens)
    text = 2 * UMT5_XXL_LAYERS * UMT5_XXL_LAYER_PARAMS * text_tokens
    area = tile_area_factor(latent[2], latent[3], *rank_tile_grid(gpus))
    vae, fast = decoder_flops(latent), decoder_flops(latent, fast=True)
    peak = H100_BF16_FLOPS
    out = {"gpus": gpus, "tokens": tokens, "flops": {"text": text, "dit_forward": dit, "vae_decode": vae,
                                                      "fast_decode": fast},
           "tile_area_factor": area, "dit_mfu": dit_mfu, "decode_mfu": decode_mfu,
           "seconds": {"text": text / (peak * dit_mfu), "dit_one_step": dit / (gpus * peak * dit_mfu),
                       "vae_decode": vae * area / (gpus * peak * decode_mfu),
                       "fast_decode": fast / (peak * decode_mfu),
                       "dit_teacher": teacher_steps * 2 * dit / (gpus * peak * dit_mfu)}}
    s = out["seconds"]
    s["one_step_vae"] = s["text"] + s["dit_one_step"] + s["vae_decode"]
    s["one_step_fast"] = s["text"] + s["dit_one_step"] + s["fast_decode"]
    s["teacher"] = s["text"] + s["dit_teacher"] + s["vae_decode"]
    return out
