"""The toy world as training data: clips encoded once through the toy VAE and text encoder, cached
on disk (so every rank and every later run reads the same tensors)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm import tqdm

from apt.core import files
from apt.core.collectives import all_gather_objects, barrier, broadcast_object
from apt.core.files import save_safetensors
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


def _cache_key(model_dir: Path, parts: tuple[str, ...] = ("vae", "text_encoder"), **params) -> str:
    """Names the cache of latents made from these params by the model's `parts` (their files stamped)."""
    stamp = {k: params[k] for k in sorted(params)}
    for part in parts:
        for f in sorted((Path(model_dir) / part).glob("*")):
            stamp[f"{part}/{f.name}"] = [f.stat().st_size, int(f.stat().st_mtime)]
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


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


def _load_cache(path: Path) -> LatentDataset | None:
    """The cached dataset, or None when there is none or it cannot be read (a crash mid-write in an older
    version, a damaged disk): then the caller computes it again and rewrites it."""
    if not path.exists():
        return None
    try:
        blob = load_file(str(path))
        captions = json.loads(path.with_suffix(".json").read_text())
        return LatentDataset(blob["latents"], blob["text_table"], blob["rows"], captions)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        print(f"note: the toy cache {path} cannot be read ({type(err).__name__}); encoding it again", file=sys.stderr)
        return None


def _save_cache(path: Path, data: LatentDataset) -> None:
    """Written atomically: a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(data.captions))
    save_safetensors({"latents": data.latents.contiguous(), "text_table": data.text_table.contiguous(),
                      "rows": data.rows}, path)


def toy_latent_dataset(components, model_dir: Path, num_clips: int, seed: int, frames: int, split: str = "train",
                       cache_dir: Path | None = None, show_progress: bool = True) -> LatentDataset:
    """Encode (or load from cache) num_clips toy clips."""
    cache_dir = Path(cache_dir or files.cache_dir()).expanduser()
    key = _cache_key(model_dir, num_clips=num_clips, seed=seed, frames=frames, split=split)
    path = cache_dir / f"toy-latents-{key}.safetensors"
    data = _load_cache(path)
    if data is None:
        clips = MovingDigits(split, num_clips, seed, ToyWorldConfig(frames=frames))
        data = LatentDataset(*encode_toy_clips(components, clips, show_progress=show_progress))
        _save_cache(path, data)
    return data


def _split_over_ranks(n: int, work, rank: int, world_size: int, batch_size: int, desc: str,
                      show_progress: bool, empty: torch.Tensor, parts_dir: Path | None = None) -> torch.Tensor:
    """work(start, stop) for items [0, n) in batches, each rank a contiguous share; the shares are
    gathered, so every rank returns all n results in order. With parts_dir, each batch's result is saved
    there as soon as it is done and a batch found there is read back instead: a crash loses one batch."""
    lo, hi = rank * n // world_size, (rank + 1) * n // world_size

    def batch(start: int) -> torch.Tensor:
        stop = min(start + batch_size, hi)
        if parts_dir is None:
            return work(start, stop)
        path = parts_dir / f"{start:08d}-{stop:08d}.safetensors"  # named by its items: another split misses it
        if path.exists():
            return load_file(str(path))["out"]
        out = work(start, stop)
        save_safetensors({"out": out.contiguous()}, path)
        return out

    if parts_dir is not None:
        parts_dir.mkdir(parents=True, exist_ok=True)
    share = [batch(start) for start in tqdm(range(lo, hi, batch_size), desc=desc, dynamic_ncols=True,
                                            disable=not show_progress)]
    share = torch.cat(share) if share else empty
    if world_size == 1:
        return share
    return torch.cat(all_gather_objects(share))


def refine_toy_latents(data: LatentDataset, components, clips: MovingDigits, steps: int, lr: float, rank: int = 0,
                       world_size: int = 1, batch_size: int = 32, show_progress: bool = True,
                       parts_dir: Path | None = None) -> torch.Tensor:
    """data's (encoder) latents refined through the decoder against their clips (VideoVAE.refine). Each
    rank refines a contiguous share and the shares are gathered: every rank returns all N latents."""
    def work(start, stop):
        videos = torch.stack([clips[i]["video"] for i in range(start, stop)])
        return components.vae.refine(videos, steps, lr, latent=data.latents[start:stop])

    return _split_over_ranks(len(data), work, rank, world_size, batch_size,
                             f"refine toy latents ({steps} decoder steps)", show_progress, data.latents[:0],
                             parts_dir)


TEACHER_NOISE_SEED = 1_000_000  # clip i's teacher sample starts from seed TEACHER_NOISE_SEED + i


def teacher_clip_choice(num_clips: int, fraction: float, seed: int) -> torch.Tensor:
    """Indices of the clips (a fixed random `fraction` of them) whose latents the teacher's samples replace."""
    return torch.nonzero(torch.rand(num_clips, generator=torch.Generator().manual_seed(seed + 123)) < fraction)[:, 0]


@torch.no_grad()
def teacher_sample_latents(data: LatentDataset, components, chosen: torch.Tensor, steps: int, guidance_scale: float,
                           rank: int = 0, world_size: int = 1, batch_size: int = 32, show_progress: bool = True,
                           parts_dir: Path | None = None) -> torch.Tensor:
    """The teacher's samples (`steps` Euler steps with classifier-free guidance against the empty prompt,
    the sampler's default shift) for the captions of clips `chosen`: LADD's synthetic data. Clip i's noise
    comes from seed TEACHER_NOISE_SEED + i, whatever the batching and the ranks (each samples a share)."""
    from apt.core import flow
    from apt.core.sampling import SamplingParams, initial_noise
    from apt.inference.sampler import Sampler

    params = SamplingParams(steps=steps, guidance_scale=guidance_scale)
    teacher = Sampler(components)  # its velocity; the captions are embedded already, the noise is per clip
    negative = components.text.encode([params.negative_prompt])
    shape = tuple(data.latents.shape[1:])

    def work(start, stop):
        clips = chosen[start:stop].tolist()
        text = data.text_table[data.rows[clips]]
        noise = initial_noise(shape, [TEACHER_NOISE_SEED + i for i in clips])
        return flow.euler_sample(teacher.velocity, noise, text, params.steps, params.guidance_scale,
                                 negative.expand(len(clips), -1, -1), params.shift)

    return _split_over_ranks(len(chosen), work, rank, world_size, batch_size,
                             f"teacher samples for {len(chosen)} clips ({steps} steps)", show_progress,
                             data.latents[:0], parts_dir)


def _cached_across_ranks(path: Path, dist, compute) -> LatentDataset:
    """The LatentDataset cached at path, else compute(parts_dir) (called on every rank: the ranks share the
    work, each batch kept in parts_dir until the whole is written there by rank 0, so a crashed run's
    batches are not computed again). Every rank takes the same branch: rank 0's look decides."""
    if broadcast_object(path.exists() if dist.rank == 0 else None, src=0):
        return _load_cache(path)
    parts_dir = path.with_name(f"{path.stem}.parts")
    data = compute(parts_dir)
    if dist.rank == 0:
        _save_cache(path, data)
        shutil.rmtree(parts_dir, ignore_errors=True)  # every rank is past the gather: nobody reads them now
    return data


def toy_training_dataset(data_cfg, components, model_dir: Path, dist) -> LatentDataset:
    """data.source=toy: rank 0 encodes the toy world (once, cached), then the other ranks read the cache.
    With data.refine_steps, the ranks then refine the latents together (once, cached under its own key);
    with data.teacher_fraction, they replace that fraction of them with the teacher's samples (likewise)."""
    params = dict(num_clips=data_cfg.num_clips, seed=data_cfg.seed, frames=data_cfg.frames)
    cache_dir = Path(data_cfg.cache_dir or files.cache_dir()).expanduser()
    if dist.rank == 0:
        data = toy_latent_dataset(components, model_dir, cache_dir=cache_dir, **params)
    barrier()
    if dist.rank != 0:
        data = toy_latent_dataset(components, model_dir, cache_dir=cache_dir, show_progress=False, **params)
    if data_cfg.refine_steps:
        key = _cache_key(model_dir, split="train", refine_steps=data_cfg.refine_steps, refine_lr=data_cfg.refine_lr,
                         **params)

        def refine(parts_dir):
            clips = MovingDigits("train", data_cfg.num_clips, data_cfg.seed, ToyWorldConfig(frames=data_cfg.frames))
            latents = refine_toy_latents(data, components, clips, data_cfg.refine_steps, data_cfg.refine_lr,
                                         dist.rank, dist.world_size, show_progress=dist.rank == 0,
                                         parts_dir=parts_dir)
            return LatentDataset(latents, data.text_table, data.rows, data.captions)

        data = _cached_across_ranks(cache_dir / f"toy-latents-{key}.safetensors", dist, refine)
    if data_cfg.teacher_fraction:
        data = with_teacher_samples(data, data_cfg, components, model_dir, cache_dir, dist, params)
    return data


def with_teacher_samples(data: LatentDataset, data_cfg, components, model_dir: Path, cache_dir: Path, dist,
                         params: dict) -> LatentDataset:
    """data with the latents of a fixed random data.teacher_fraction of its clips replaced by the teacher's
    samples for their captions; the samples are drawn once (the ranks share the work) and cached."""
    chosen = teacher_clip_choice(len(data), data_cfg.teacher_fraction, data_cfg.seed)
    key = _cache_key(model_dir, ("transformer", "text_encoder"), split="train",
                     teacher_fraction=data_cfg.teacher_fraction, teacher_steps=data_cfg.teacher_steps,
                     teacher_guidance=data_cfg.teacher_guidance, **params)

    def sample(parts_dir):
        latents = teacher_sample_latents(data, components, chosen, data_cfg.teacher_steps,
                                         data_cfg.teacher_guidance, dist.rank, dist.world_size,
                                         show_progress=dist.rank == 0, parts_dir=parts_dir)
        return LatentDataset(latents, data.text_table, data.rows[chosen], [data.captions[i] for i in chosen])

    samples = _cached_across_ranks(cache_dir / f"toy-teacher-{key}.safetensors", dist, sample)
    latents = data.latents.clone()
    latents[chosen] = samples.latents
    return LatentDataset(latents, data.text_table, data.rows, data.captions)
