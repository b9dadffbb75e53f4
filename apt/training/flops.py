"""Model FLOPs of a training sample, by arithmetic over a Wan transformer's config: what the trainer
divides by the measured time for the logged model FLOP utilisation, and what the planner
(apt/planning/estimate.py) multiplies up to a cluster."""

from __future__ import annotations


def forward_flops(n: int, m: dict, depth: int, text: int, head: str = "velocity",
                  n_taps: int = 3, mlp_ratio: float = 4.0) -> float:
    """Matmul FLOPs (2 per multiply-add) of one forward: per block self-attention q/k/v/o and
    cross-attention q/o on n tokens, cross k/v on the text, the FFN, and attention itself
    (4 n^2 d self, 4 n L d cross); plus patch embedding, text projection and the head."""
    d, ffn = m["num_attention_heads"] * m["attention_head_dim"], m["ffn_dim"]
    patch = m["in_channels"] * m["patch_size"][0] * m["patch_size"][1] * m["patch_size"][2]
    block = 2 * n * (6 * d * d + 2 * d * ffn) + 2 * text * 2 * d * d + 4 * n * n * d + 4 * n * text * d
    embed = 2 * n * patch * d + 2 * text * (m["text_dim"] * d + d * d) + 2 * (m["freq_dim"] * d + d * d + 6 * d * d)
    if head == "velocity":
        out = 2 * n * d * patch
    else:  # token heads: k, v projections over n tokens and one query's attention, per tap
        out = n_taps * (2 * n * 2 * d * d + 4 * n * d + 2 * (2 * d * d + 2 * d * int(d * mlp_ratio)))
    return depth * block + embed + out


def per_sample_flops(stage: str, model: dict, tokens: int, text_tokens: int, depth: int, taps: tuple[int, ...],
                     head_mlp_ratio: float = 4.0, activation_checkpointing: bool = True, lora: bool = False) -> dict:
    """FLOPs of one training sample of a stage (what the trainer divides by time for the logged MFU).
    With `lora` the generator's base weights are frozen: its backward computes input gradients only
    (the adapter's own FLOPs, under 1% at the ranks used, are not counted)."""
    fg = forward_flops(tokens, model, depth, text_tokens)
    fd = forward_flops(tokens, model, taps[-1], text_tokens, "tokens", len(taps), head_mlp_ratio)
    rc = 1 if activation_checkpointing else 0  # one extra forward to recompute checkpointed blocks
    g_train = fg * ((2 if lora else 3) + rc)  # forward, input gradients (and weight gradients), recompute
    if stage == "apt":
        # D step: G forward (no grad) + 3 D passes forward/backward; G step: G forward/backward and D
        # forward + backward to its input only (D's weights are frozen in the G step: no weight gradients)
        per_sample = fg + 3 * fd * (3 + rc) + g_train + fd * (2 + rc)
    elif stage == "distill":
        # CFG teacher (2 forwards), target forward, student forward/backward
        per_sample = 2 * fg + fg + g_train
    else:
        raise ValueError(f"stage must be 'apt' or 'distill', got {stage!r}")
    return {"g_forward": fg, "d_forward": fd, "per_sample": per_sample}


def tokens_of(latent_shape: tuple[int, ...], patch_size: tuple[int, int, int]) -> int:
    """Tokens after patchify of a (C, T, h, w) latent."""
    _, t, h, w = latent_shape
    return (t // patch_size[0]) * (h // patch_size[1]) * (w // patch_size[2])
