"""Per-GPU memory and FLOPs of a training step at scale, by arithmetic over the real model configs.

Parameter counts come from the diffusers model built on the meta device (no weights); the
discriminator heads are built there too. Memory follows what the code does (apt/adversarial/stage.py,
distill/stage.py, apt/training/distributed.py): FSDP2 shards fp32 master weights, fp32 gradients, optimiser
states and the EMA over all GPUs; compute runs in bf16 (MixedPrecisionPolicy); every block is
activation-checkpointed, so a forward keeps each block's input and the backward recomputes one
block at a time; attention is SDPA's memory-efficient/flash path (no N x N matrix is kept).
The per-block activation formula was read off the saved tensors of diffusers' WanTransformerBlock
and is checked against a measured tiny run (apt/planning/check.py, tests/test_estimate.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apt.training.flops import per_sample_flops

# torch and diffusers are imported where the models are built: the CLI reads its flags first.
WAN_COMMON = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
                  freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                  rope_max_seq_len=1024)
WAN_MODELS = {  # diffusers transformer/config.json of Wan-AI/Wan2.1-T2V-*-Diffusers, Wan2.2-TI2V-5B-Diffusers
    "wan2.1-1.3b": dict(WAN_COMMON, num_layers=30, num_attention_heads=12, ffn_dim=8960),
    "wan2.1-14b": dict(WAN_COMMON, num_layers=40, num_attention_heads=40, ffn_dim=13824),
    "wan2.2-ti2v-5b": dict(WAN_COMMON, in_channels=48, out_channels=48, num_layers=30, num_attention_heads=24,
                           ffn_dim=14336),
}
WAN_VAE = dict(spatial=8, temporal=4)  # AutoencoderKLWan, z_dim 16
# Wan 2.2's VAE (Wan2.2-TI2V-5B-Diffusers vae/config.json): z 48, 16x spatial (2x2 pixel patches as channels,
# then 8x); its latent statistics are placeholders, which change no byte or FLOP
WAN22_VAE_MODEL = dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
                       patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4, latents_mean=[0.0] * 48,
                       latents_std=[1.0] * 48)
# per model: the VAE's (spatial, temporal) factors, its AutoencoderKLWan kwargs ({}: diffusers' defaults,
# Wan 2.1's VAE) and the native sample size (height, width; 16x VAE and 2x2 patches need multiples of 32)
WAN_VAES = {
    "wan2.1-1.3b": (WAN_VAE, {}, (720, 1280)),
    "wan2.1-14b": (WAN_VAE, {}, (720, 1280)),
    "wan2.2-ti2v-5b": (dict(spatial=16, temporal=4), WAN22_VAE_MODEL, (704, 1280)),
}
WAN_TEXT_TOKENS = 512  # umT5-XXL context (d_model 4096)
H100_BF16_FLOPS = 989e12  # dense bf16 peak


@dataclass
class Setup:
    model: dict  # WanTransformer3DModel kwargs
    stage: str = "apt"  # "apt" (stage 2) or "distill" (stage 1)
    gpus: int = 1
    micro_batch: int = 1  # per GPU per accumulation step
    batch: int = 0  # global samples per update (0 = micro_batch * gpus)
    frames: int = 49
    height: int = 720
    width: int = 1280
    text_tokens: int = WAN_TEXT_TOKENS
    vae: dict = field(default_factory=lambda: dict(WAN_VAE))
    taps: tuple[int, ...] | None = None  # discriminator taps; None = default_taps(depth)
    head_mlp_ratio: float = 4.0
    compute_bytes: int = 2  # bf16 compute (parallel.mixed_precision=bf16); 4 for fp32
    master_bytes: int = 4  # fp32 sharded master weights, gradients, optimiser states, EMA
    activation_checkpointing: bool = True
    optimizer_states: int = 2  # stage 2's per-parameter states: Adam (beta1 0) 2, RMSprop 1
    # reward feedback (stage 2): the VAE decode of the first k latent frames of each sample, with a
    # gradient; 0 = no reward. vae: AutoencoderKLWan kwargs (Wan 2.1's VAE by default), vae_bytes its dtype.
    reward_latent_frames: int = 0
    vae_model: dict = field(default_factory=dict)
    vae_bytes: int = 2


def build_on_meta(model_cfg: dict):
    """The diffusers WanTransformer3DModel of this config, on the meta device (shapes only)."""
    import torch
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        return WanTransformer3DModel(**model_cfg)


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(model_cfg: dict, taps=None, head_mlp_ratio: float = 4.0) -> dict:
    import torch

    from apt.models.backbone import default_taps
    from discriminator.heads import LogitHead, TokenHead

    model = build_on_meta(model_cfg)
    blocks = len(model.blocks)
    taps = tuple(sorted(taps or default_taps(blocks)))
    dim = model_cfg["num_attention_heads"] * model_cfg["attention_head_dim"]
    with torch.device("meta"):
        heads = _numel(TokenHead(dim, model_cfg["num_attention_heads"], head_mlp_ratio)) * len(taps)
        heads += _numel(LogitHead(dim, len(taps)))
    total, block = _numel(model), _numel(model.blocks[0])
    out_head = _numel(model.norm_out) + _numel(model.proj_out) + model.scale_shift_table.numel()
    root = total - blocks * block
    return {"total": total, "block": block, "blocks": blocks, "root": root, "dim": dim, "taps": taps,
            "d_heads": heads, "d_total": total + heads,
            # D freezes the blocks past its deepest tap and the velocity head (discriminator/model.py)
            "d_trainable": root - out_head + taps[-1] * block + heads}


def latent_tokens(s: Setup) -> tuple[tuple[int, int, int, int], int]:
    """Latent (C, T, h, w) and token count after patchify."""
    sf, tf = s.vae["spatial"], s.vae["temporal"]
    c = s.model["in_channels"]
    t, h, w = (s.frames - 1) // tf + 1, s.height // sf, s.width // sf
    pt, ph, pw = s.model["patch_size"]
    return (c, t, h, w), (t // pt) * (h // ph) * (w // pw)


# -- activations (bytes per sample) ------------------------------------------------------------------
def block_activation_bytes(n: int, text: int, m: dict, b: int) -> int:
    """Everything one WanTransformerBlock saves for backward (its full, un-checkpointed activations):
    12 fp32 and 10 compute-dtype (n, dim) tensors (fp32 norms/modulation/residuals; q, k, v, outputs),
    two (n, ffn) tensors, per-token norm statistics, SDPA log-sum-exp, rotary slices, text k/v."""
    d, heads, hd = m["num_attention_heads"] * m["attention_head_dim"], m["num_attention_heads"], m["attention_head_dim"]
    per_token = d * (12 * 4 + 10 * b) + 2 * m["ffn_dim"] * b + 9 * 4 + 2 * heads * 4 + hd * b
    return n * per_token + text * d * (3 * 4 + 3 * b)


def pass_bytes(n: int, latent_numel: int, m: dict, b: int, depth: int, ac: bool, head: str,
               n_taps: int = 3, text: int = WAN_TEXT_TOKENS) -> int:
    """What one forward with grad keeps until its backward, per sample. Checkpointed blocks keep their
    input token states (n, dim); the embedding keeps the latent and text projections; the velocity
    head ('velocity') keeps fp32 norm in/out and the projection input; D's token heads ('tokens') keep
    the deepest tap's states and six (n, dim) tensors each (normed tokens, k, normed k, v, and the
    head-major copies of k and v that SDPA makes for a single query)."""
    d = m["num_attention_heads"] * m["attention_head_dim"]
    blocks = depth * (n * d * b if ac else block_activation_bytes(n, text, m, b))
    embed = latent_numel * b + text * (m["text_dim"] + 2 * d) * b + 6 * d * 4
    if head == "velocity":
        out = n * d * (4 + 4 + b)
    else:
        out = n * d * b + n_taps * 6 * n * d * b
    return blocks + embed + out


def activation_bytes(s: Setup, counts: dict) -> dict:
    """Peak kept activations per GPU for one micro-batch, for each phase of a step."""
    latent, n = latent_tokens(s)
    numel = latent[0] * latent[1] * latent[2] * latent[3]
    m, b, ac, text = s.model, s.compute_bytes, s.activation_checkpointing, s.text_tokens
    g = pass_bytes(n, numel, m, b, counts["blocks"], ac, "velocity", text=text)
    d = pass_bytes(n, numel, m, b, counts["taps"][-1], ac, "tokens", len(counts["taps"]), text=text)
    recompute = block_activation_bytes(n, text, m, b) if ac else 0
    mb = s.micro_batch
    if s.stage == "apt":
        # D step: the fake half of L_D is backpropagated first, so at most two D passes are alive
        # together (the real and the sigma-perturbed real pass of aR1). G step: G forward, then D on
        # the fakes (an upper bound: D's weights are frozen there, so some of its inputs need not be saved)
        phases = {"d_step": 2 * d, "g_step": g + d}
    else:
        phases = {"student": g}  # teacher and target run without grad
    return {k: mb * (v + recompute) for k, v in phases.items()} | {"recompute_block": mb * recompute}


def reward_decode(s: Setup) -> dict:
    """The reward pass's VAE decode of one sample's first k latent frames, measured on the meta device
    (no weights): forward FLOPs (torch's FLOP counter) and the activations one latent frame's decode
    keeps for backward (the bytes autograd saves), the first frame and a later (4-frame) one. With
    adv.reward_checkpointing the backward recomputes one latent frame at a time, so the largest of
    them is the peak; FLOPs: forward + recompute + backward = 4 forwards."""
    import torch
    from diffusers import AutoencoderKLWan
    from torch.utils.flop_counter import FlopCounterMode

    from apt.models.vae import VideoVAE

    (c, _, h, w), k = latent_tokens(s)[0], s.reward_latent_frames
    with torch.device("meta"):
        vae = VideoVAE(AutoencoderKLWan(**s.vae_model))  # float32; the saved bytes are scaled to vae_bytes

    def saved_and_flops(frames: int) -> tuple[int, float]:
        saved = []

        def pack(t):
            saved.append(t.numel() * (s.vae_bytes if t.is_floating_point() else t.element_size()))
            return t

        z = torch.zeros(1, c, frames, h, w, device="meta", requires_grad=True)
        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            vae.decode_with_grad(z, checkpointing=False)
        return sum(saved), counter.get_total_flops()

    first, first_flops = saved_and_flops(1)
    two, two_flops = saved_and_flops(2) if k > 1 else (first, first_flops)
    flops = first_flops + (k - 1) * (two_flops - first_flops)
    return {"first_frame_bytes": first, "later_frame_bytes": two - first if k > 1 else 0,
            "forward_flops": flops, "training_flops": 4 * flops}


def step_flops(s: Setup, counts: dict) -> dict:
    _, n = latent_tokens(s)
    out = per_sample_flops(s.stage, s.model, n, s.text_tokens, counts["blocks"], counts["taps"], s.head_mlp_ratio,
                           s.activation_checkpointing)
    batch = s.batch or s.micro_batch * s.gpus
    return out | {"per_step": out["per_sample"] * batch}


# -- the whole picture ---------------------------------------------------------------------------------
def estimate(s: Setup) -> dict:
    c = param_counts(s.model, s.taps, s.head_mlp_ratio)
    if s.stage not in ("apt", "distill"):
        raise ValueError(f"stage must be 'apt' or 'distill', got {s.stage!r}")
    gpus, mb, mw = s.gpus, s.master_bytes, s.compute_bytes
    p = c["total"]
    mem = {"G params (fp32, sharded)": mb * p / gpus, "G grads (fp32, sharded)": mb * p / gpus}
    if s.stage == "apt":
        # Adam with beta1 0 (adv.optimizer=adam) keeps exp_avg and exp_avg_sq; RMSprop only the latter
        mem["G Adam exp_avg + exp_avg_sq (fp32, sharded)"] = s.optimizer_states * mb * p / gpus
        mem["EMA of G (fp32, sharded)"] = mb * p / gpus
        mem["D params (fp32, sharded)"] = mb * c["d_total"] / gpus
        mem["D grads (fp32, sharded)"] = mb * c["d_trainable"] / gpus
        mem["D Adam exp_avg + exp_avg_sq (fp32, sharded)"] = s.optimizer_states * mb * c["d_trainable"] / gpus
        # both roots stay gathered from forward to backward; one block in use + one prefetched, and one
        # block's unsharded gradient awaiting reduce-scatter
        mem["gathered bf16 params + grads"] = mw * (2 * c["root"] + 3 * c["block"])
    else:
        mem["student AdamW exp_avg + exp_avg_sq (fp32, sharded)"] = 2 * mb * p / gpus
        mem["EMA target (fp32, sharded)"] = mb * p / gpus
        mem["teacher (fp32, sharded)"] = mb * p / gpus
        mem["gathered bf16 params + grads"] = mw * (3 * c["root"] + 3 * c["block"])
    acts = activation_bytes(s, c)
    flops = step_flops(s, c)
    reward = None
    if s.stage == "apt" and s.reward_latent_frames:
        # the G step's reward phase: G's kept activations plus one latent frame's decode being recomputed
        # (the adversarial and reward gradients meet at G's sample, one backward at a time)
        reward = reward_decode(s)
        frame = max(reward["first_frame_bytes"], reward["later_frame_bytes"])
        acts["g_step_reward"] = acts["g_step"] - s.micro_batch * pass_bytes(
            latent_tokens(s)[1], 0, s.model, s.compute_bytes, c["taps"][-1], s.activation_checkpointing, "tokens",
            len(c["taps"]), text=s.text_tokens) + s.micro_batch * frame
        flops["per_sample"] += reward["training_flops"]
        flops["per_step"] = flops["per_sample"] * (s.batch or s.micro_batch * gpus)
        flops["reward_decode_forward"] = reward["forward_flops"]
    phase = max((k for k in acts if k != "recompute_block"), key=acts.get)
    mem[f"activations, peak ({phase}, AC)" if s.activation_checkpointing else f"activations ({phase})"] = acts[phase]
    batch = s.batch or s.micro_batch * gpus
    accum = batch / (s.micro_batch * gpus)
    latent, n = latent_tokens(s)
    return {"setup": s, "counts": c, "latent": latent, "tokens": n, "memory": mem, "activations": acts,
            "total_bytes": sum(mem.values()), "flops": flops, "batch": batch, "grad_accum": accum, "reward": reward}


def _gib(x: float) -> str:
    return f"{x / 2**30:8.2f} GiB"


def format_table(r: dict, mfu: float = 0.4, name: str = "") -> str:
    s, c, f = r["setup"], r["counts"], r["flops"]
    lines = [f"{name or 'model'}: {c['blocks']} blocks, dim {c['dim']}, {c['total'] / 1e9:.3f} B params "
             f"(D: taps {list(c['taps'])}, {c['d_trainable'] / 1e9:.3f} B trained, heads {c['d_heads'] / 1e6:.1f} M)",
             f"stage {s.stage}: {s.gpus} GPUs, micro-batch {s.micro_batch}, batch {r['batch']} "
             f"(grad_accum {r['grad_accum']:g}), {s.frames}x{s.height}x{s.width} -> latent "
             f"{'x'.join(map(str, r['latent']))} = {r['tokens']:,} tokens, text {s.text_tokens} tokens",
             "", "per-GPU memory"]
    width = max(len(k) for k in r["memory"])
    lines += [f"  {k:<{width}} {_gib(v)}" for k, v in r["memory"].items()]
    lines += [f"  {'total':<{width}} {_gib(r['total_bytes'])}", "",
              "activations per micro-batch: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in r["activations"].items()),
              "", f"FLOPs: G forward {f['g_forward'] / 1e12:.1f} TFLOP/sample, D forward {f['d_forward'] / 1e12:.1f} "
              f"TFLOP/sample, step {f['per_sample'] / 1e12:.1f} TFLOP/sample, {f['per_step'] / 1e15:,.0f} PFLOP/step",
              f"  at {mfu:.0%} MFU of H100 bf16 ({H100_BF16_FLOPS / 1e12:.0f} TFLOP/s): "
              f"{f['per_step'] / (s.gpus * H100_BF16_FLOPS * mfu):.1f} s/step"]
    if r.get("reward"):
        rw = r["reward"]
        lines += [f"reward pass: VAE decode of {s.reward_latent_frames} latent frame(s) per sample, "
                  f"{rw['forward_flops'] / 1e12:.1f} TFLOP forward (x4 with checkpointed backward, included above); "
                  f"one latent frame's decode keeps {rw['first_frame_bytes'] / 2**30:.2f} GiB (first) / "
                  f"{rw['later_frame_bytes'] / 2**30:.2f} GiB (later)"]
    return "\n".join(lines)
