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

import functools
import json
import math
from dataclasses import dataclass, field

from apt.planning.reward_cost import reward_decode
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
    micro_batch: int = 1  # per data-parallel group (gpus / context_parallel GPUs) per accumulation step
    batch: int = 0  # global samples per update (0 = micro_batch * data-parallel groups)
    context_parallel: int = 1  # GPUs splitting each sample's tokens (parallel.context_parallel)
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
    # adv.reward_window: the k frames start anywhere in the clip; the frames before them are decoded (forward
    # only) to warm the decoder's cache, at worst all the others
    reward_window: bool = False
    reward_params: float = 0.0  # parameters of the reward models (a CLIP is ~0.4e9), frozen, whole on every GPU
    reward_bytes: int = 2  # their weights' dtype (adv.rewards[*].dtype: bf16 by default)
    lora_rank: int = 0  # model.lora.rank: the generator trains an adapter of this rank on frozen weights (0: all)

    @property
    def dp_groups(self) -> int:
        return self.gpus // self.context_parallel

    @property
    def global_batch(self) -> int:
        return self.batch or self.micro_batch * self.dp_groups

    def check(self) -> None:
        """What parallel.context_parallel needs of the GPUs, the heads and the tokens."""
        cp, heads = self.context_parallel, self.model["num_attention_heads"]
        if cp < 1 or self.gpus % cp:
            raise ValueError(f"context parallelism {cp} must divide the {self.gpus} GPUs")
        if heads % cp:
            raise ValueError(f"context parallelism {cp} must divide the {heads} attention heads (Ulysses)")
        tokens = latent_tokens(self)[1]
        if tokens % cp:
            raise ValueError(f"context parallelism {cp} must divide the {tokens:,} tokens")
        if self.global_batch % (self.micro_batch * self.dp_groups):
            raise ValueError(f"batch {self.global_batch} is not a multiple of micro-batch x data-parallel groups "
                             f"= {self.micro_batch} x {self.dp_groups}")


def build_on_meta(model_cfg: dict):
    """The diffusers WanTransformer3DModel of this config, on the meta device (shapes only)."""
    import torch
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        return WanTransformer3DModel(**model_cfg)


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(model_cfg: dict, taps=None, head_mlp_ratio: float = 4.0) -> dict:
    """Parameter counts of G (= the teacher) and D (a planner's search asks often: cached)."""
    key = json.dumps([model_cfg, list(taps) if taps else None, head_mlp_ratio], sort_keys=True)
    return dict(_param_counts(key))


@functools.lru_cache(maxsize=16)
def _param_counts(key: str) -> dict:
    import torch

    from apt.models.backbone import default_taps
    from apt.models.lora import WAN_TARGETS
    from discriminator.heads import LogitHead, TokenHead

    model_cfg, taps, head_mlp_ratio = json.loads(key)
    model = build_on_meta(model_cfg)
    blocks = len(model.blocks)
    taps = tuple(sorted(taps or default_taps(blocks)))
    dim = model_cfg["num_attention_heads"] * model_cfg["attention_head_dim"]
    with torch.device("meta"):
        heads = _numel(TokenHead(dim, model_cfg["num_attention_heads"], head_mlp_ratio)) * len(taps)
        heads += _numel(LogitHead(dim, len(taps)))
    total, block = _numel(model), _numel(model.blocks[0])
    # a rank-1 adapter's parameters on the layers model.lora wraps by default (r (in + out) per layer)
    lora_per_rank = sum(m.in_features + m.out_features for name, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and any(name == t or name.endswith(f".{t}")
                                                                  for t in WAN_TARGETS))
    out_head = _numel(model.norm_out) + _numel(model.proj_out) + model.scale_shift_table.numel()
    root = total - blocks * block
    return {"total": total, "block": block, "blocks": blocks, "root": root, "dim": dim, "taps": taps,
            "d_heads": heads, "d_total": total + heads, "lora_per_rank": lora_per_rank,
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
def block_activation_bytes(n: int, text: int, m: dict, b: int, lora_rank: int = 0) -> int:
    """Everything one WanTransformerBlock saves for backward (its full, un-checkpointed activations):
    12 fp32 and 10 compute-dtype (n, dim) tensors (fp32 norms/modulation/residuals; q, k, v, outputs),
    two (n, ffn) tensors, per-token norm statistics, SDPA log-sum-exp, rotary slices, text k/v."""
    d, heads, hd = m["num_attention_heads"] * m["attention_head_dim"], m["num_attention_heads"], m["attention_head_dim"]
    per_token = d * (12 * 4 + 10 * b) + 2 * m["ffn_dim"] * b + 9 * 4 + 2 * heads * 4 + hd * b
    # LoRA: each wrapped layer keeps its adapter's (tokens, r) bottleneck (8 layers see the n tokens and the
    # cross-attention's k and v the text)
    adapter = (8 * n + 2 * text) * lora_rank * b
    return n * per_token + text * d * (3 * 4 + 3 * b) + adapter


def pass_bytes(n: int, latent_numel: int, m: dict, b: int, depth: int, ac: bool, head: str,
               n_taps: int = 3, text: int = WAN_TEXT_TOKENS, context_parallel: int = 1, lora_rank: int = 0) -> int:
    """What one forward with grad keeps until its backward, per sample, on one GPU holding n tokens.
    Checkpointed blocks keep their input token states (n, dim); the embedding keeps the latent and text
    projections; the velocity head ('velocity') keeps fp32 norm in/out and the projection input; D's
    token heads ('tokens') keep the deepest tap's states and six (n, dim) tensors each (normed tokens, k,
    normed k, v, and the head-major copies of k and v that attention makes for a single query).
    Under context parallelism the velocity is gathered whole (fp32) and each token head keeps its
    share's scores and their exponentials for the log-sum-exp merge."""
    d = m["num_attention_heads"] * m["attention_head_dim"]
    blocks = depth * (n * d * b if ac else block_activation_bytes(n, text, m, b, lora_rank))
    embed = latent_numel * b + text * (m["text_dim"] + 2 * d) * b + 6 * d * 4
    split = context_parallel > 1
    if head == "velocity":
        velocity = n * context_parallel * m["out_channels"] * math.prod(m["patch_size"]) * 4
        out = n * d * (4 + 4 + b) + (velocity if split else 0)
    else:
        out = n * d * b + n_taps * (6 * n * d * b + (2 * n * m["num_attention_heads"] * 4 if split else 0))
    return blocks + embed + out


def activation_bytes(s: Setup, counts: dict) -> dict:
    """Peak kept activations per GPU for one micro-batch, for each phase of a step. Under context
    parallelism a GPU keeps its share of the tokens (Ulysses' attention holds all tokens for a share of
    the heads: the same bytes); the latent and the text states are whole on every GPU."""
    latent, n = latent_tokens(s)
    n //= s.context_parallel
    numel = latent[0] * latent[1] * latent[2] * latent[3]
    m, b, ac, text = s.model, s.compute_bytes, s.activation_checkpointing, s.text_tokens
    cp = s.context_parallel
    g = pass_bytes(n, numel, m, b, counts["blocks"], ac, "velocity", text=text, context_parallel=cp,
                   lora_rank=s.lora_rank)
    d = pass_bytes(n, numel, m, b, counts["taps"][-1], ac, "tokens", len(counts["taps"]), text=text, context_parallel=cp)
    recompute = block_activation_bytes(n, text, m, b, s.lora_rank) if ac else 0  # G's block (D's has no adapter)
    mb = s.micro_batch
    if s.stage == "apt":
        # D step: the fake half of L_D is backpropagated first, so at most two D passes are alive
        # together (the real and the sigma-perturbed real pass of aR1). G step: G forward, then D on
        # the fakes (an upper bound: D's weights are frozen there, so some of its inputs need not be saved)
        phases = {"d_step": 2 * d, "g_step": g + d}
    else:
        phases = {"student": g}  # teacher and target run without grad
    return {k: mb * (v + recompute) for k, v in phases.items()} | {"recompute_block": mb * recompute}


def step_flops(s: Setup, counts: dict) -> dict:
    _, n = latent_tokens(s)
    out = per_sample_flops(s.stage, s.model, n, s.text_tokens, counts["blocks"], counts["taps"], s.head_mlp_ratio,
                           s.activation_checkpointing, lora=s.lora_rank > 0)
    return out | {"per_step": out["per_sample"] * s.global_batch}


# -- the whole picture ---------------------------------------------------------------------------------
def estimate(s: Setup) -> dict:
    if s.stage not in ("apt", "distill"):
        raise ValueError(f"stage must be 'apt' or 'distill', got {s.stage!r}")
    s.check()
    c = param_counts(s.model, s.taps, s.head_mlp_ratio)
    gpus, mb, mw = s.gpus, s.master_bytes, s.compute_bytes
    p = trained = c["total"]
    mem = {"G params (fp32, sharded)": mb * p / gpus}
    if s.lora_rank:  # the base frozen (no gradient, no optimiser state); the adapter beside it trains
        trained = s.lora_rank * c["lora_per_rank"]
        mem[f"G LoRA rank {s.lora_rank} adapter (fp32, sharded)"] = mb * trained / gpus
    mem["G grads (fp32, sharded)"] = mb * trained / gpus
    if s.stage == "apt":
        # Adam with beta1 0 (adv.optimizer=adam) keeps exp_avg and exp_avg_sq; RMSprop only the latter
        mem["G Adam exp_avg + exp_avg_sq (fp32, sharded)"] = s.optimizer_states * mb * trained / gpus
        mem["EMA of G (fp32, sharded)"] = mb * (p + (trained if s.lora_rank else 0)) / gpus
        mem["D params (fp32, sharded)"] = mb * c["d_total"] / gpus
        mem["D grads (fp32, sharded)"] = mb * c["d_trainable"] / gpus
        mem["D Adam exp_avg + exp_avg_sq (fp32, sharded)"] = s.optimizer_states * mb * c["d_trainable"] / gpus
        # both roots stay gathered from forward to backward; one block in use + one prefetched, and one
        # block's unsharded gradient awaiting reduce-scatter
        mem["gathered bf16 params + grads"] = mw * (2 * c["root"] + 3 * c["block"])
    else:
        mem["student AdamW exp_avg + exp_avg_sq (fp32, sharded)"] = 2 * mb * trained / gpus
        mem["EMA target (fp32, sharded)"] = mb * (p + (trained if s.lora_rank else 0)) / gpus
        mem["teacher (fp32, sharded)"] = mb * p / gpus
        mem["gathered bf16 params + grads"] = mw * (3 * c["root"] + 3 * c["block"])
    if s.reward_params and s.stage == "apt":
        mem[f"reward models ({'bf16' if s.reward_bytes == 2 else 'fp32'}, frozen, whole on every GPU)"] = (
            s.reward_bytes * s.reward_params)
    acts = activation_bytes(s, c)
    flops = step_flops(s, c)
    reward = None
    if s.stage == "apt" and s.reward_latent_frames:
        # the G step's reward phase: G's kept activations plus one latent frame's decode being recomputed
        # (the adversarial and reward gradients meet at G's sample, one backward at a time)
        reward = reward_decode(latent_tokens(s)[0], s.reward_latent_frames, s.vae_model, s.vae_bytes)
        frame = (max(reward["first_frame_bytes"], reward["later_frame_bytes"])
                 if s.reward_window or s.reward_latent_frames > 1 else reward["first_frame_bytes"])
        d_pass = pass_bytes(latent_tokens(s)[1] // s.context_parallel, 0, s.model, s.compute_bytes, c["taps"][-1],
                            s.activation_checkpointing, "tokens", len(c["taps"]), text=s.text_tokens,
                            context_parallel=s.context_parallel)
        acts["g_step_reward"] = acts["g_step"] - s.micro_batch * d_pass + s.micro_batch * frame
        flops["per_sample"] += max(reward["training_flops"], reward["window_training_flops"] if s.reward_window else 0)
        if s.reward_window:  # the cache warm-up, forward only: at worst every frame before the window
            warm = max(0, latent_tokens(s)[0][1] - s.reward_latent_frames) * reward["later_frame_forward_flops"]
            flops["per_sample"] += warm
            flops["reward_warmup_forward"] = warm
        flops["per_step"] = flops["per_sample"] * s.global_batch
        flops["reward_decode_forward"] = reward["forward_flops"]
    phase = max((k for k in acts if k != "recompute_block"), key=acts.get)
    mem[f"activations, peak ({phase}, AC)" if s.activation_checkpointing else f"activations ({phase})"] = acts[phase]
    batch = s.global_batch
    accum = batch / (s.micro_batch * s.dp_groups)
    latent, n = latent_tokens(s)
    return {"setup": s, "counts": c, "latent": latent, "tokens": n, "memory": mem, "activations": acts,
            "total_bytes": sum(mem.values()), "flops": flops, "batch": batch, "grad_accum": accum, "reward": reward}


def seconds_per_update(r: dict, mfu: float) -> float:
    """At `mfu` of an H100's dense bf16 peak; context parallelism's all-to-alls are not counted."""
    return r["flops"]["per_step"] / (r["setup"].gpus * H100_BF16_FLOPS * mfu)
