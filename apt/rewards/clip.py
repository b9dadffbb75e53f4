"""The `clip` reward kind: a local transformers CLIP folder scores frames against their prompt.

OpenAI CLIP, PickScore and HPS v2 are CLIP checkpoints: the score is the cosine of the frames' and
the prompt's embeddings, averaged over frames, the frames resized and normalised as the folder's
preprocessor says. With `head` (a safetensors linear layer `weight` (1, D), `bias` (1,) over the
image embedding, e.g. an aesthetic predictor) it is the head's score instead, prompt-independent.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from apt.core.config import ConfigError

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class CLIPReward(nn.Module):
    """Frames and prompt through a local CLIP folder: mean over frames of the cosine similarity."""

    def __init__(self, folder: str | Path, head: str | Path | None = None, name: str = "clip"):
        super().__init__()
        from transformers import AutoTokenizer, CLIPModel

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"CLIP reward folder {folder} does not exist (it must be a local "
                                    f"transformers CLIP folder: config.json, weights, tokenizer files)")
        self.name = name
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.size = int(self.model.config.vision_config.image_size)
        pre = folder / "preprocessor_config.json"
        stats = json.loads(pre.read_text()) if pre.is_file() else {}
        self.register_buffer("mean", torch.tensor(stats.get("image_mean", CLIP_MEAN)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(stats.get("image_std", CLIP_STD)).view(1, 3, 1, 1), persistent=False)
        self.head = None
        if head:
            from safetensors.torch import load_file

            weights = load_file(str(Path(head).expanduser()))
            self.head = nn.Linear(weights["weight"].shape[1], 1).requires_grad_(False)
            self.head.load_state_dict(weights)

    def _pixels(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B*F, 3, S, S): short side resized to S (antialiased), centre crop,
        CLIP normalisation, as CLIPImageProcessor does."""
        h, w = videos.shape[-2:]
        frames = ((rearrange(videos, "b c f h w -> (b f) c h w").float() + 1) / 2).clamp(0, 1)
        scale = self.size / min(h, w)
        size = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        frames = F.interpolate(frames, size=size, mode="bicubic", align_corners=False, antialias=True)
        top, left = (size[0] - self.size) // 2, (size[1] - self.size) // 2
        frames = frames[:, :, top : top + self.size, left : left + self.size]
        return (frames - self.mean) / self.std

    @staticmethod
    def _embedding(out) -> torch.Tensor:
        # transformers 5 returns an output object whose pooler_output is the projected embedding
        return out if torch.is_tensor(out) else out.pooler_output

    def forward(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        b, f = videos.shape[0], videos.shape[2]
        self.model.to(videos.device)
        image = self._embedding(self.model.get_image_features(pixel_values=self._pixels(videos))).view(b, f, -1)
        if self.head is not None:
            return self.head.to(videos.device)(F.normalize(image, dim=-1)).mean(1)[:, 0]
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(videos.device)
        text = self._embedding(self.model.get_text_features(input_ids=tokens.input_ids,
                                                            attention_mask=tokens.attention_mask))
        return (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)[:, None]).sum(-1).mean(1)


def build(spec) -> CLIPReward:
    """From a reward's config (apt/rewards/config.py): `path` is the CLIP folder, `head` an optional linear head."""
    if not spec.path:
        raise ConfigError("path: a clip reward needs a local CLIP folder")
    try:
        return CLIPReward(spec.path, spec.head or None, name=spec.name or "clip")
    except (FileNotFoundError, OSError) as err:
        raise ConfigError(f"path: {err}") from None
