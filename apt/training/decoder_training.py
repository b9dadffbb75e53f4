"""Distil the VAE decoder into a FastDecoder (apt/models/fast_decoder.py): latents in, the VAE's decode as target.

The pool is the first `clips` latents of the data (latent shards, or a data source's clips: the toy world), decoded once by
the full VAE (a progress bar; stored as float16). With `crop` > 0 each clip gives one random window of
crop x crop latent cells, and the VAE decodes that window: at 720p a whole decoded 49-frame clip is
0.27 GB in float16, a 32-cell window 19 MB (the pool holds clips x frames x 3 x (crop x 8)^2 x 2
bytes). The last `holdout` clips are kept out of training for the report (PSNR against the VAE).
Every `save_every` steps the model, optimiser, schedule and data position go to <out>/train_state.pt,
written atomically; running the command again with the same --out and settings resumes from it
bit-exactly (other settings are refused).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from apt.models.fast_decoder import CONFIG, WEIGHTS, FastDecoder, config_for_vae
from apt.training.build_state import BuildState

STATE = "train_state.pt"


@dataclass
class DecoderTraining:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 100  # steps of linear learning-rate warm-up, then cosine decay to 0
    clips: int = 2048
    holdout: int = 64
    crop: int = 0  # each clip cut to one random window of crop x crop latent cells; 0 = whole clips
    latent_noise: float = 0.0  # > 0: add a noised copy of the training latents (noise std uniform in [0, this])
    seed: int = 0
    save_every: int = 200
    channels: tuple[int, ...] | None = None  # None: config_for_vae's default for the VAE
    blocks: int = 2


def pixel_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE + L1: the L1 keeps thin strokes and small coloured regions from being averaged away."""
    err = out.float() - target.float()
    return err.square().mean() + err.abs().mean()


def psnr(out: torch.Tensor, target: torch.Tensor) -> float:
    mse = (out.float() - target.float()).square().mean().item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))  # [-1, 1] has a peak-to-peak range of 2


@torch.no_grad()
def decode_pool(vae, latents: torch.Tensor, batch_size: int, desc: str = "VAE decode (targets)",
                show_progress: bool = True) -> torch.Tensor:
    out = []
    for start in tqdm(range(0, len(latents), batch_size), desc=desc, dynamic_ncols=True, disable=not show_progress):
        out.append(vae.decode(latents[start : start + batch_size]).half())
    return torch.cat(out)


def random_windows(latents: torch.Tensor, crop: int, g: torch.Generator) -> torch.Tensor:
    """One random crop x crop window of each latent (clips smaller than the window are kept whole)."""
    h, w = latents.shape[-2:]
    ch, cw = min(crop, h), min(crop, w)
    out = []
    for latent in latents:
        y = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        x = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        out.append(latent[..., y : y + ch, x : x + cw])
    return torch.stack(out)


def train_fast_decoder(vae, latents: torch.Tensor, out: str | Path, cfg: DecoderTraining,
                       source: str = "", progress: bool = True, device=None) -> dict:
    """Train on `latents` (N, C, T, h, w), normalised; writes <out>/config.json, model.safetensors,
    report.json; returns the report. progress: show the progress bars."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if len(latents) <= cfg.holdout + cfg.batch_size:
        raise ValueError(f"{len(latents)} clips: need more than holdout ({cfg.holdout}) + batch_size "
                         f"({cfg.batch_size})")
    torch.manual_seed(cfg.seed)
    model = FastDecoder(config_for_vae(vae.vae.config, cfg.channels, cfg.blocks)).to(device or latents.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    warmup = max(1, cfg.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    g = torch.Generator().manual_seed(cfg.seed)
    start, losses = 0, []
    settings = {**asdict(cfg), "clips_given": len(latents), "source": source}
    resume = BuildState(out / STATE, settings, every=cfg.save_every)  # not `progress`: the bar's switch
    state = resume.load(map_location=next(model.parameters()).device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, losses = state["step"], list(state["losses"])
        g.set_state(state["rng"].cpu())
        sched.load_state_dict(state["sched"])
    train_n = len(latents) - cfg.holdout
    if cfg.latent_noise > 0:
        # generators' latents lie near the data's, not on it: a noised copy, decoded by the VAE too,
        # teaches the decoder the VAE's answer around the data (the held-out latents stay clean, last)
        noise_g = torch.Generator().manual_seed(cfg.seed + 1)
        train = latents[:train_n]
        scale = torch.rand(train_n, 1, 1, 1, 1, generator=noise_g) * cfg.latent_noise
        noisy = train + scale.to(train.device) * torch.randn(train.shape, generator=noise_g).to(train.device)
        latents = torch.cat([train, noisy, latents[train_n:]])
        train_n *= 2
    if cfg.crop:
        latents = random_windows(latents, cfg.crop, torch.Generator().manual_seed(cfg.seed + 2))
    targets = decode_pool(vae, latents, cfg.batch_size, show_progress=progress)
    tick = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="fast decoder", dynamic_ncols=True,
               disable=not progress)
    model.train()
    for step in bar:
        idx = torch.randint(0, train_n, (cfg.batch_size,), generator=g).to(latents.device)
        loss = pixel_loss(model(latents[idx]), targets[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fast decoder loss is {loss.item()} at step {step}: lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 6))
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if step + 1 < cfg.steps:  # the last step's state would be deleted at once
            resume.save_if_due(step + 1, lambda: {"model": model.state_dict(), "opt": opt.state_dict(),
                                                  "sched": sched.state_dict(), "rng": g.get_state(),
                                                  "losses": losses})
    seconds = time.perf_counter() - tick
    model.eval()
    with torch.no_grad():
        held = latents[train_n:]
        fast = torch.cat([model.decode(z) for z in held.split(cfg.batch_size)])
        report = {
            "source": source, "clips": len(latents), "holdout": cfg.holdout, **asdict(cfg),
            "config": asdict(model.config), "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds_this_run": round(seconds, 1), "final_loss": losses[-1] if losses else None,
            "holdout_psnr_db_vs_vae": round(psnr(fast, targets[train_n:]), 2),
            "torch_threads": torch.get_num_threads(),
        }
    model.save(out, report)
    (out / "losses.txt").write_text("\n".join(map(str, losses)) + "\n")
    resume.finish()
    return report


def load_latents(data: str, clips: int, data_seed: int, components, model_dir: Path) -> tuple[torch.Tensor, str]:
    """(latents (N, C, T, h, w) normalised, where they came from): the first `clips` items of a shard folder,
    or `clips` clips of a registered data source that makes them (the toy world), drawn with data_seed."""
    from apt.data.sources import data_sources, training_dataset

    if data in data_sources() and data != "shards":
        from apt.models.model_folder import native_sample
        from apt.training.config import DataConfig
        from apt.training.distributed import DistInfo

        frames = native_sample(model_dir)["frames"]
        cfg = DataConfig(source=data, num_clips=clips, seed=data_seed, frames=frames)
        dataset = training_dataset(cfg, components, model_dir, DistInfo(0, 1, 0, torch.device("cpu"), "none"))
        return dataset.latents[:clips], f"data source {data}: {clips} clips (seed {data_seed}, {frames} frames)"
    from apt.data.shards import ShardDataset

    shards = ShardDataset(data)
    n = min(clips, len(shards))
    if n < clips:
        print(f"{data} holds {len(shards)} items: using all of them")
    return torch.stack([shards[i]["latent"] for i in range(n)]), f"shards {data}: first {n} items"


def train(cfg) -> dict:
    """apt-train-decoder for its validated options (apt/cli/train_decoder.py): the folder locked for the
    training; a finished decoder there is replaced only with cfg.overwrite."""
    from apt.training.distributed import set_cpu_threads
    from apt.training.run_folder import lock_run_folder

    set_cpu_threads()
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_run_folder(out, "--out")  # a second training into the same folder stops here
    try:
        return _train(cfg, out)
    finally:
        lock.close()


def finished(out: Path) -> bool:
    """A trained fast decoder is there (its weights and report written, no training in progress)."""
    return all((out / name).is_file() for name in (CONFIG, WEIGHTS, "report.json")) and not (out / STATE).exists()


def _train(cfg, out: Path) -> dict:
    import json

    from apt.core.config import ConfigError
    from apt.data.sources import data_sources
    from apt.models.loading import load_components
    from apt.models.model_folder import resolve_model_dir

    if finished(out) and not cfg.overwrite:
        raise FileExistsError(f"{out} holds a trained fast decoder: --overwrite trains a new one in its place, or "
                              "give another --out")
    model_dir = resolve_model_dir(cfg.model)
    makes_clips = cfg.data in data_sources() and cfg.data != "shards"  # then it embeds captions too
    components = load_components(model_dir, parts=("vae", "text_encoder", "tokenizer") if makes_clips else ("vae",))
    latents, source = load_latents(cfg.data, cfg.clips, cfg.data_seed, components, model_dir)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    components.vae.to(device)
    if len(latents) <= cfg.holdout + cfg.batch_size:
        raise ConfigError(f"{len(latents)} latents are too few: need more than holdout + batch_size "
                          f"({cfg.holdout} + {cfg.batch_size})")
    training = DecoderTraining(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, clips=len(latents),
                               holdout=cfg.holdout, crop=cfg.crop, latent_noise=cfg.latent_noise, seed=cfg.seed,
                               save_every=cfg.save_every, channels=tuple(cfg.channels) or None, blocks=cfg.blocks)
    report = train_fast_decoder(components.vae, latents.to(device), out, training, source=source, device=device)
    print(json.dumps(report, indent=2))
    return report
