"""Architectures of the toy world's tiny components and where the trained ones are shipped.

All are real diffusers/transformers classes, so the code that loads them is the code that loads
a real Wan 2.1 folder. `scripts/build_toy.py` trains each from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path

from apt.models.model_folder import MANIFEST

# A diffusers-layout folder inside the package: transformer/, vae/, text_encoder/, tokenizer/, shipped
# under the name "toy" (setup.cfg's seaweed_apt.models entry point).
TOY_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy-wan"
# What the toy teacher samples by default, declared in its folder's manifest (apt/models/loading.py).
NATIVE_SAMPLE = dict(height=32, width=32, frames=9, fps=8, upscale=4)


def write_manifest(model_dir: str | Path) -> None:
    manifest = {"kind": "teacher", "sample": NATIVE_SAMPLE,
                "notes": "The toy world's teacher (scripts/build_toy.py): 9-frame 32x32 clips of moving digits."}
    (Path(model_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

# 4x spatial / 4x temporal (two down stages): 9x32x32 RGB clips -> 8 x 3x8x8 latents.
VAE_CONFIG = dict(
    base_dim=12,
    z_dim=8,
    dim_mult=[1, 2, 4],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[True, True],
    scale_factor_spatial=4,
    scale_factor_temporal=4,
)

# UMT5 encoder over raw bytes (ByT5 tokenizer: 256 bytes + 3 specials + 125 sentinels = 384 ids).
TEXT_ENCODER_CONFIG = dict(
    vocab_size=384,
    d_model=64,
    d_kv=16,
    d_ff=128,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=32,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
)
MAX_TEXT_TOKENS = 64  # toy captions are < 50 bytes

# 12 blocks, so discriminator taps at 4/9, 13/18 and 1 of depth (layers 5, 9, 12) are distinct.
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=4,
    attention_head_dim=24,
    in_channels=VAE_CONFIG["z_dim"],
    out_channels=VAE_CONFIG["z_dim"],
    text_dim=TEXT_ENCODER_CONFIG["d_model"],
    freq_dim=64,
    ffn_dim=256,
    num_layers=12,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=64,
)
