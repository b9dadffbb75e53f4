"""Training data as latents + text embeddings: the interface both training stages read.

Item: {"latent": (C, T, h, w) normalised VAE latent, "text": (L, D) text-encoder states, "caption": str}.
Two sources give it (data.source, chosen in apt/training/launch.py): shard sets of real videos written by
apt-preprocess, opened and checked against the model here, and the toy world (apt/toy/data.py).
"""

from __future__ import annotations

from apt.core.config import ConfigError
from apt.data.shards import ShardDataset


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
