"""Training data as latents + text embeddings: the interface both training stages read.

Item: {"latent": (C, T, h, w) normalised VAE latent, "text": (L, D) text-encoder states, "caption": str}.
Two sources give it: the toy world, encoded once through the shipped VAE and text encoder and cached
on disk (so every rank and every later run reads the same tensors), and shard sets of real videos
written by scripts/preprocess.py (apt/data/shards.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from apt.config import ConfigError
from apt.data.shards import ShardDataset
from apt.data.toy import MovingDigits, ToyWorldConfig


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


def build_training_dataset(data_cfg, components, model_dir: Path, dist):
    """Both stages' data. Toy: rank 0 encodes the toy world (once, cached), then the others read the
    cache. Shards: every rank reads the preprocessed set, checked against the model first."""
    if data_cfg.source == "shards":
        return open_shard_dataset(data_cfg, components)
    if data_cfg.source != "toy":
        raise ConfigError(f"data.source {data_cfg.source!r} is not supported")
    kwargs = dict(num_clips=data_cfg.num_clips, seed=data_cfg.seed, frames=data_cfg.frames,
                  cache_dir=data_cfg.cache_dir or None)
    if dist.rank == 0:
        data = toy_latent_dataset(components, model_dir, **kwargs)
    if dist.world_size > 1:
        torch.distributed.barrier()
    if dist.rank != 0:
        data = toy_latent_dataset(components, model_dir, show_progress=False, **kwargs)
    return data


def open_shard_dataset(data_cfg, components=None) -> ShardDataset:
    """The shard set at data.path, failing with the key named if it does not fit the config or model."""
    try:
        data = ShardDataset(data_cfg.path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data.path: {err}") from None
    index = data.index
    for key in ("frames", "height", "width", "fps"):
        want = getattr(data_cfg, key)
        if want and float(want) != float(index[key]):
            raise ConfigError(f"data.{key}={want} but the shards at {data_cfg.path} hold "
                              f"{index['frames']}x{index['height']}x{index['width']} clips at {index['fps']:g} fps")
    if len(data) == 0:
        raise ConfigError(f"data.path: the shard set at {data_cfg.path} has no items")
    if components is not None and components.transformer is not None:
        check_against_model(index, components.transformer, components.vae)
    return data


def check_against_model(index: dict, transformer, vae=None) -> None:
    """Shards encoded for another model fail at start-up, naming the key, not deep inside a step."""
    cfg = transformer.config
    c, t, h, w = index["latent_shape"]
    if c != cfg.in_channels:
        raise ConfigError(f"data.path: the shards hold {c}-channel latents but model.path's transformer takes "
                          f"{cfg.in_channels} (encode them with this model's VAE)")
    if index["text_shape"][1] != cfg.text_dim:
        raise ConfigError(f"data.path: the shards hold {index['text_shape'][1]}-dim text embeddings but "
                          f"model.path's transformer takes text_dim {cfg.text_dim}")
    p_t, p_h, p_w = cfg.patch_size
    if t % p_t or h % p_h or w % p_w:
        raise ConfigError(f"data.path: latent grid {t}x{h}x{w} is not divisible by the patch size "
                          f"{tuple(cfg.patch_size)}")
    if vae is not None:
        stamp = index["stamp"]
        mean = [round(float(v), 6) for v in vae.mean.flatten()]
        std = [round(float(v), 6) for v in vae.std.flatten()]
        if mean != stamp["latents_mean"] or std != stamp["latents_std"]:
            raise ConfigError("data.path: the shards were normalised with another VAE's latents_mean/latents_std "
                              "than model.path's")
