"""The toy world as training data: clips encoded once through the toy VAE and text encoder, cached
on disk (so every rank and every later run reads the same tensors)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from apt.toy.world import MovingDigits, ToyWorldConfig


class LatentDataset(torch.utils.data.Dataset):
    def __init__(self, latents: torch.Tensor, text_table: torch.Tensor, rows: torch.Tensor, captions: list[str]):
        if not (len(latents) == len(rows) == len(captions)):
            raise ValueError("latents, rows and captions must have the same length")
        self.latents, self.text_table, self.rows, self.captions = latents, text_table, rows, captions

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict:
        return {"latent": self.latents[i], "text": self.text_table[self.rows[i]], "caption": self.captions[i]}


def _cache_key(model_dir: Path, **params) -> str:
    stamp = {k: params[k] for k in sorted(params)}
    for part in ("vae", "text_encoder"):
        for f in sorted((Path(model_dir) / part).glob("*")):
            stamp[f"{part}/{f.name}"] = [f.stat().st_size, int(f.stat().st_mtime)]
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("APT_CACHE_DIR", Path.home() / ".cache" / "seaweed-apt"))


@torch.no_grad()
def encode_toy_clips(components, dataset: MovingDigits, batch_size: int = 32, desc: str = "encode toy clips",
                     show_progress: bool = True):
    """Latents (N, C, T, h, w), a caption-embedding table (U, L, D), each clip's row, and its caption."""
    latents, captions = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc=desc, dynamic_ncols=True, disable=not show_progress):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        latents.append(components.vae.encode(torch.stack([it["video"] for it in items])))
        captions += [it["caption"] for it in items]
    unique = sorted(set(captions))
    table = torch.cat([components.text.encode(unique[i : i + 256]) for i in range(0, len(unique), 256)])
    row = {c: i for i, c in enumerate(unique)}
    return torch.cat(latents), table, torch.tensor([row[c] for c in captions]), captions


def toy_latent_dataset(components, model_dir: Path, num_clips: int, seed: int, frames: int, split: str = "train",
                       cache_dir: Path | None = None, show_progress: bool = True) -> LatentDataset:
    """Encode (or load from cache) num_clips toy clips. Written atomically: a crash leaves no half file."""
    cache_dir = Path(cache_dir or default_cache_dir()).expanduser()
    key = _cache_key(model_dir, num_clips=num_clips, seed=seed, frames=frames, split=split)
    path = cache_dir / f"toy-latents-{key}.safetensors"
    if path.exists():
        blob = load_file(str(path))
        captions = json.loads(path.with_suffix(".json").read_text())
        return LatentDataset(blob["latents"], blob["text_table"], blob["rows"], captions)
    data = MovingDigits(split, num_clips, seed, ToyWorldConfig(frames=frames))
    latents, table, rows, captions = encode_toy_clips(components, data, show_progress=show_progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    path.with_suffix(".json").write_text(json.dumps(captions))
    save_file({"latents": latents.contiguous(), "text_table": table.contiguous(), "rows": rows}, str(tmp))
    tmp.replace(path)
    return LatentDataset(latents, table, rows, captions)


def toy_training_dataset(data_cfg, components, model_dir: Path, dist) -> LatentDataset:
    """data.source=toy: rank 0 encodes the toy world (once, cached), then the other ranks read the cache."""
    kwargs = dict(num_clips=data_cfg.num_clips, seed=data_cfg.seed, frames=data_cfg.frames,
                  cache_dir=data_cfg.cache_dir or None)
    if dist.rank == 0:
        data = toy_latent_dataset(components, model_dir, **kwargs)
    if dist.world_size > 1:
        torch.distributed.barrier()
    if dist.rank != 0:
        data = toy_latent_dataset(components, model_dir, show_progress=False, **kwargs)
    return data
