"""Videos + captions -> VAE latents and text embeddings in shards (see apt/data/shards.py).

Under torchrun rank r takes items r::world of what is not done yet; every rank writes its own
shards (names carry the rank), then rank 0 writes index.json and report.json. Resumable: finished
shards are the record of what is done, and files skipped before are not retried (unless asked).
A file that cannot give a clip (corrupt, too short, no caption, an image in a video set) is
skipped, logged with its reason and counted, never fatal.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from apt.core.collectives import barrier
from apt.core.files import write_atomically
from apt.data.shards import DTYPES, ShardWriter, read_shard_meta, shard_files, write_index
from apt.data.video_folder import ClipError, ClipSpec, SourceItem, cut_clips, discover, load_clip

SKIP_LOG = "skipped-r{rank:03d}.jsonl"


class _Clips(torch.utils.data.Dataset):
    """Decoding as a Dataset so DataLoader workers can do it in parallel; errors travel as strings."""

    def __init__(self, items: list[SourceItem], spec: ClipSpec, max_upscale: float = 0.0):
        self.items, self.spec, self.max_upscale = items, spec, max_upscale

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        try:
            return i, load_clip(self.items[i], self.spec, self.max_upscale), None
        except ClipError as err:
            return i, None, str(err)
        except Exception as err:  # a decoder bug on one odd file must not stop the run ...
            if out_of_memory(err):  # ... but memory running out is this machine's, not the file's
                raise MemoryError(f"out of memory decoding {self.items[i].key} at {self.spec.width}x"
                                  f"{self.spec.height}x{self.spec.frames}: lower the clip size, --workers or "
                                  "--batch-size; nothing was skipped, the same command resumes") from err
            return i, None, f"unreadable: {type(err).__name__}: {err}"


def out_of_memory(err: BaseException) -> bool:
    """MemoryError, or torch's and numpy's allocation failures (a RuntimeError or their own types)."""
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower() \
        or type(err).__name__ in ("OutOfMemoryError", "_ArrayMemoryError")


def _read_skip_logs(out: Path) -> dict[str, str]:
    bad = {}
    for log in sorted(out.glob("skipped-r*.jsonl")):
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            bad[row["path"]] = row["reason"]
    return bad


def _check_patch_grid(latent: tuple[int, ...], cfg, vae, model_dir: Path) -> None:
    """Refuse, before anything is encoded, a clip size whose latent grid the folder's transformer patches do
    not tile (training would refuse the shards): 1280x720 for Wan 2.2 TI2V-5B, whose 16x VAE and 2x2 patches
    need multiples of 32."""
    from apt.core.config import ConfigError

    config = Path(model_dir) / "transformer" / "config.json"
    if not config.is_file():  # a folder of VAE and text encoder only: nothing to check against
        return
    p_t, p_h, p_w = json.loads(config.read_text()).get("patch_size", (1, 2, 2))  # diffusers' default
    _, t, h, w = latent
    if h % p_h or w % p_w or t % p_t:
        cell = (vae.spatial_factor * p_h, vae.spatial_factor * p_w)
        raise ConfigError(f"height x width {cfg.height}x{cfg.width} gives a {h}x{w} latent grid that this model's "
                          f"{p_h}x{p_w} patches do not tile: use multiples of {cell[0]} x {cell[1]}")


def _spec(cfg, comps, model_dir: Path) -> dict:
    """What the index records; `stamp` must be equal for every shard of a set."""
    latent = comps.vae.latent_shape(cfg.frames, cfg.height, cfg.width)
    _check_patch_grid(latent, cfg, comps.vae, model_dir)
    text_shape = [comps.text.max_tokens, comps.text.dim]
    stamp = {"clip": [cfg.frames, cfg.height, cfg.width, cfg.fps], "latent_shape": list(latent),
             "text_shape": text_shape, "dtype": cfg.storage_dtype,
             "latents_mean": [round(float(v), 6) for v in comps.vae.mean.flatten()],
             "latents_std": [round(float(v), 6) for v in comps.vae.std.flatten()]}
    return {"frames": cfg.frames, "height": cfg.height, "width": cfg.width, "fps": cfg.fps,
            "latent_shape": list(latent), "text_shape": text_shape, "dtype": cfg.storage_dtype,
            "model": str(model_dir), "stamp": stamp}


@torch.no_grad()
def _encode(comps, clips: list[torch.Tensor], captions: list[str], device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    latents = comps.vae.encode(torch.stack(clips).to(device)).cpu()
    ids, mask = comps.text.tokenize(captions)
    states = comps.text.forward_tokens(ids, mask).cpu()
    return latents, [s[: int(n)] for s, n in zip(states, mask.sum(1))]


def preprocess(cfg, dist) -> dict:
    """Encode this rank's share of apt.cli.preprocess.PreprocessConfig `cfg`; rank 0 returns the report
    (others return their own counts)."""
    from apt.models.loading import load_components
    from apt.models.model_folder import resolve_model_dir

    cfg.validate()
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    items, no_caption = discover(cfg.videos, cfg.captions or None)
    clip_spec = ClipSpec(cfg.frames, cfg.height, cfg.width, cfg.fps)
    items = cut_clips(items, clip_spec, cfg.clips_per_video, cfg.clip_stride)
    done = {s for p in shard_files(out) for s in read_shard_meta(p)["sources"]}
    bad = _read_skip_logs(out)
    barrier()  # every rank has read the same state before anyone writes
    pending = [it for it in items if it.key not in done and (cfg.retry_skipped or it.key not in bad)]
    mine = pending[dist.rank::dist.world_size]

    on_gpu = dist.device.type == "cuda"
    enc_dtype = DTYPES[cfg.encoder_dtype or ("bf16" if on_gpu else "fp32")]
    model_dir = resolve_model_dir(cfg.model)
    comps = load_components(model_dir, parts=("vae", "text_encoder", "tokenizer"), dtype=enc_dtype,
                            vae_dtype=enc_dtype)
    comps.vae.to(dist.device)
    comps.text.encoder.to(dist.device)
    spec = _spec(cfg, comps, model_dir)
    writer = ShardWriter(out, dist.rank, cfg.shard_size, DTYPES[cfg.storage_dtype], spec["stamp"])
    loader = torch.utils.data.DataLoader(_Clips(mine, clip_spec, cfg.max_upscale), batch_size=None,
                                         num_workers=cfg.workers)
    skip_log = (out / SKIP_LOG.format(rank=dist.rank)).open("a", encoding="utf-8")
    counts = Counter()
    batch: list[tuple[SourceItem, torch.Tensor]] = []

    def encode_batch():
        latents, texts = _encode(comps, [c for _, c in batch], [it.caption for it, _ in batch], dist.device)
        for (it, _), lat, txt in zip(batch, latents, texts):
            writer.add(lat, txt, it.caption, it.key)
        counts["encoded"] += len(batch)
        batch.clear()

    try:
        for i, clip, reason in tqdm(loader, total=len(mine), desc=f"preprocess {out.name}",
                                    disable=dist.rank != 0, dynamic_ncols=True):
            if clip is None:
                # logged at once (and fsync-ed) so the report survives a crash
                skip_log.write(json.dumps({"path": mine[i].key, "reason": reason}) + "\n")
                skip_log.flush()
                os.fsync(skip_log.fileno())
                counts["skipped"] += 1
                continue
            batch.append((mine[i], clip))
            if len(batch) >= cfg.batch_size:
                encode_batch()
        if batch:
            encode_batch()
        writer.flush()
    finally:
        skip_log.close()
    barrier()
    if dist.rank != 0:
        return dict(counts)
    index = write_index(out, spec)
    skipped = [dict(path=k, reason=v) for k, v in sorted(_read_skip_logs(out).items())
               if k not in {s for p in shard_files(out) for s in read_shard_meta(p)["sources"]}]
    skipped += no_caption
    report = {"videos": str(Path(cfg.videos).expanduser()), "out": str(out), "config": asdict(cfg),
              "discovered": len(items) + len(no_caption), "encoded": index["num_items"],
              "skipped": len(skipped), "skipped_by_reason": dict(Counter(s["reason"].split(":")[0] for s in skipped)),
              "this_run": {"already_done": len(done), "pending": len(pending), **counts,
                           "world_size": dist.world_size},
              "skipped_files": skipped}
    write_atomically(out / "report.json", json.dumps(report, indent=1))
    return report
