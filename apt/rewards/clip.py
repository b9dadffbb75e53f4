"""The `clip` reward kind: a local transformers CLIP folder scores frames against their prompt.

OpenAI CLIP, PickScore and HPS v2.1 (after `apt-convert-reward hps`) are CLIP checkpoints: the score
is the model's own logit scale times the cosine of the frames' and the prompt's embeddings (PickScore's
score as its authors compute it), averaged over the frames it is given, the frames resized and
normalised as the folder's preprocessor says. With `head` (a safetensors stack of linear layers over
the normalised image embedding, e.g. the LAION aesthetic predictor after `apt-convert-reward
aesthetic`) it is the head's score instead, prompt-independent.
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


def load_head(path: str | Path) -> nn.Sequential:
    """A head file: linear layers `<i>.weight` / `<i>.bias` applied in order (no activations: the LAION
    aesthetic MLP has none), or one layer as `weight` / `bias`."""
    from safetensors.torch import load_file

    weights = load_file(str(Path(path).expanduser()))
    if "weight" in weights:
        weights = {f"0.{k}": v for k, v in weights.items()}
    indices = sorted({int(k.split(".")[0]) for k in weights})
    layers = []
    for i in indices:
        w = weights[f"{i}.weight"]
        layer = nn.Linear(w.shape[1], w.shape[0], bias=f"{i}.bias" in weights)
        layer.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.split(".")[0] == str(i)})
        layers.append(layer)
    if layers[-1].out_features != 1:
        raise ValueError(f"the head in {path} ends in {layers[-1].out_features} outputs; a score is one")
    return nn.Sequential(*layers).requires_grad_(False)


def resize_and_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 3, size, size) in [0, 1]: the short side resized to `size`
    (bicubic, antialiased), centre crop, as CLIP's image processors do."""
    h, w = frames.shape[-2:]
    frames = ((frames.float() + 1) / 2).clamp(0, 1)
    scale = size / min(h, w)
    out = (max(size, round(h * scale)), max(size, round(w * scale)))
    frames = F.interpolate(frames, size=out, mode="bicubic", align_corners=False, antialias=True)
    top, left = (out[0] - size) // 2, (out[1] - size) // 2
    return frames[:, :, top : top + size, left : left + size]


class CLIPReward(nn.Module):
    """Frames and prompt through a local CLIP folder: mean over frames of logit_scale x cosine similarity."""

    def __init__(self, folder: str | Path, head: str | Path | None = None, name: str = "clip",
                 dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        from transformers import AutoTokenizer, CLIPModel

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"CLIP reward folder {folder} does not exist (it must be a local "
                                    f"transformers CLIP folder: config.json, weights, tokenizer files)")
        self.name = name
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.size = int(self.model.config.vision_config.image_size)
        pre = folder / "preprocessor_config.json"
        stats = json.loads(pre.read_text()) if pre.is_file() else {}
        self.register_buffer("mean", torch.tensor(stats.get("image_mean", CLIP_MEAN)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(stats.get("image_std", CLIP_STD)).view(1, 3, 1, 1), persistent=False)
        self.head = load_head(head).to(dtype) if head else None

    def _pixels(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B*F, 3, S, S): short side resized to S (antialiased), centre crop,
        CLIP normalisation, as CLIPImageProcessor does."""
        frames = resize_and_crop(rearrange(videos, "b c f h w -> (b f) c h w"), self.size)
        return ((frames - self.mean) / self.std).to(self.model.dtype)

    @staticmethod
    def _embedding(out) -> torch.Tensor:
        # transformers 5 returns an output object whose pooler_output is the projected embedding
        return (out if torch.is_tensor(out) else out.pooler_output).float()

    def forward(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        b, f = videos.shape[0], videos.shape[2]
        self.model.to(videos.device)
        image = self._embedding(self.model.get_image_features(pixel_values=self._pixels(videos))).view(b, f, -1)
        if self.head is not None:
            head = self.head.to(videos.device)
            return head(F.normalize(image, dim=-1).to(head[0].weight.dtype)).float().mean(1)[:, 0]
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(videos.device)
        text = self._embedding(self.model.get_text_features(input_ids=tokens.input_ids,
                                                            attention_mask=tokens.attention_mask))
        cosine = (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)[:, None]).sum(-1).mean(1)
        return self.model.logit_scale.float().exp() * cosine


def build(spec) -> CLIPReward:
    """From a reward's config (apt/rewards/config.py): `path` is the CLIP folder, `head` an optional head."""
    from apt.rewards.config import unknown_options

    unknown_options(spec, ())
    if not spec.path:
        raise ConfigError("path: a clip reward needs a local CLIP folder")
    dtype = torch.float32 if spec.dtype == "float32" else torch.bfloat16
    try:
        return CLIPReward(spec.path, spec.head or None, name=spec.name or "clip", dtype=dtype)
    except (FileNotFoundError, OSError) as err:
        raise ConfigError(f"path: {err}") from None
    except ValueError as err:
        raise ConfigError(f"head: {err}") from None
