"""Load the components of a diffusers-layout model folder (apt/models/model_folder.py) into our wrappers.

The same code loads the shipped toy teacher and a user's Wan2.1-T2V-1.3B-Diffusers folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError

from apt.core.config import ConfigError
from apt.core.files import DamagedFile
from apt.models.fast_decoder import FastDecoder
from apt.models.model_folder import PARTS, check_layout, verify_files
from apt.models.text import TextEncoder
from apt.models.vae import VideoVAE

if TYPE_CHECKING:  # diffusers is imported when a transformer is loaded, not with this module
    from apt.models.backbone import WanBackbone

DEFAULT_MAX_TEXT_TOKENS = 512  # Wan's umT5 context
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


@dataclass
class Components:
    transformer: WanBackbone | None = None
    vae: VideoVAE | None = None
    text: TextEncoder | None = None
    fast_decoder: FastDecoder | None = None  # optional: the model folder's fast_decoder/ (--decoder fast)

    def to(self, device: torch.device | str) -> "Components":
        for part in (self.transformer, self.vae, self.text, self.fast_decoder):
            if part is not None:
                part.to(device)
        return self


def text_context_length(tokenizer) -> int:
    """Tokenizers store their context in model_max_length; unset ones report a huge sentinel."""
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if n and n < 1_000_000 else DEFAULT_MAX_TEXT_TOKENS


def load_components(model_dir: str | Path, parts=PARTS, dtype: torch.dtype = torch.float32,
                    vae_dtype: torch.dtype = torch.float32, verified: bool = False) -> Components:
    """The model folder's `parts`; `verified` when the caller has just checked every file's SHA-256
    (verify_files), so that a 14B transformer is not read twice for it."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown model parts {sorted(unknown)}; known: {PARTS}")
    model_dir = check_layout(model_dir, parts)
    if not verified:
        verify_files(model_dir, parts)  # an export's recorded SHA-256s (a teacher folder has none)
    out = Components()
    try:
        _load_parts(out, model_dir, parts, dtype, vae_dtype)
    except (FileNotFoundError, ConfigError):
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:  # what a damaged file raises
        raise DamagedFile(f"{model_dir}: a part cannot be loaded ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); the folder is damaged or not a Wan "
                          "folder") from err
    return out


def _load_parts(out: Components, model_dir: Path, parts, dtype: torch.dtype, vae_dtype: torch.dtype) -> None:
    if "transformer" in parts:
        from apt.models.backbone import WanBackbone

        out.transformer = WanBackbone.from_pretrained(model_dir, torch_dtype=dtype).eval()
    if "vae" in parts:  # imported only when loaded: `--decoder fast` serving never imports the VAE
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(model_dir, subfolder="vae", torch_dtype=vae_dtype)
        out.vae = VideoVAE(vae.eval().requires_grad_(False))
    if "text_encoder" in parts or "tokenizer" in parts:
        from transformers import AutoTokenizer, UMT5EncoderModel

        tokenizer = AutoTokenizer.from_pretrained(model_dir / "tokenizer")
        # transformers >= 4.56 calls it dtype (torch_dtype warns)
        encoder = UMT5EncoderModel.from_pretrained(model_dir / "text_encoder", dtype=dtype)
        out.text = TextEncoder(tokenizer, encoder.eval().requires_grad_(False), text_context_length(tokenizer))

