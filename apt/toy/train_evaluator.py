"""Train the clip evaluator (apt/toy/evaluator.py) on real toy training clips and measure it on real
held-out ones (held-out glyphs and combinations), beside the hand-made reader of apt/toy/attributes.py.

Mild augmentation (blur, noise, dimming) so that a soft or noisy generated clip is judged on what it
shows rather than rejected as unlike anything seen in training.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from apt.toy.evaluator import EVALUATOR_DIR, HEADS, ClipEvaluator, save_evaluator, score_clips
from apt.toy.world import MovingDigits
from apt.training.build_state import BuildState

REPORT_NAME = "report.json"
HELD_OUT_SEED = 1  # the report's held-out clips; apt/core/video_metrics.py's reference set uses seed 0


def gaussian_blur(videos: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Spatial Gaussian blur of each clip (B, 3, F, H, W) with its own sigma (B,), 5x5 taps, edges replicated."""
    b, c, f, h, w = videos.shape
    offsets = torch.arange(-2, 3, dtype=torch.float32)
    k1 = torch.exp(-offsets[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)  # (B, 5)
    kernels = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c * f, 0)[:, None]  # (B*C*F, 1, 5, 5)
    x = F.pad(videos.reshape(1, b * c * f, h, w), (2, 2, 2, 2), mode="replicate")
    return F.conv2d(x, kernels, groups=b * c * f).view(b, c, f, h, w)


def augment(videos: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per clip: blur (p 0.5, sigma 0.3-1.3 px), dimming (p 0.3, x0.7-1), Gaussian noise (p 0.3, std <= 0.08)."""
    b = videos.shape[0]
    u = lambda: torch.rand(b, generator=generator)  # noqa: E731
    view = (b, 1, 1, 1, 1)
    sigma = torch.where(u() < 0.5, 0.3 + u(), torch.zeros(b))
    x = torch.where((sigma > 0).view(view), gaussian_blur(videos, sigma), videos)
    dim = torch.where(u() < 0.3, 0.7 + 0.3 * u(), torch.ones(b))
    x = (x + 1) * dim.view(view) - 1
    std = torch.where(u() < 0.3, 0.08 * u(), torch.zeros(b))
    x = x + std.view(view) * torch.randn(x.shape, generator=generator)
    return x.clamp(-1, 1)


def clips_and_labels(split: str, n: int, seed: int, start: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    data = MovingDigits(split, length=start + n, seed=seed)
    items = [data[i] for i in range(start, start + n)]
    return torch.stack([it["video"] for it in items]), {k: torch.tensor([it[k] for it in items]) for k in HEADS}


def accuracy(videos: torch.Tensor, labels: dict[str, torch.Tensor], model: ClipEvaluator) -> dict[str, float]:
    preds, _ = score_clips(videos, model)
    hits = {k: preds[k] == labels[k] for k in HEADS}
    out = {k: h.float().mean().item() for k, h in hits.items()}
    out["all"] = torch.stack(list(hits.values())).all(0).float().mean().item()
    return {k: round(v, 4) for k, v in out.items()}


def hand_reader_accuracy(videos: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    from apt.toy.attributes import attribute_accuracy

    requests = [{k: int(labels[k][i]) for k in HEADS} for i in range(len(videos))]
    return {k: round(v, 4) for k, v in attribute_accuracy(videos, requests).items()}


@torch.no_grad()
def vae_reconstructions(videos: torch.Tensor) -> torch.Tensor:
    """Held-out clips through the toy VAE: the best a generated clip can look after decoding."""
    from apt.models.loading import load_components
    from apt.toy.components import TOY_MODEL_DIR

    vae = load_components(TOY_MODEL_DIR, parts=("vae",)).vae
    return torch.cat([vae.decode(vae.encode(c)) for c in videos.split(32)])


def classification_loss(model: ClipEvaluator, videos: torch.Tensor, items: list[dict]) -> torch.Tensor:
    """The sum over the heads (digit, colour, direction) of their cross-entropies."""
    logits, _ = model(videos)
    return sum(F.cross_entropy(logits[k], torch.tensor([it[k] for it in items])) for k in HEADS)


def train_evaluator(out_dir: Path = EVALUATOR_DIR, steps: int = 600, batch_size: int = 64, lr: float = 3e-3,
                    seed: int = 0, held_out: int = 1000, reader_clips: int = 300, save_every: int = 200) -> dict:
    """The evaluator from scratch, then its held-out report. Progress is saved every save_every steps: after a
    crash the same command resumes where it was."""
    torch.manual_seed(seed)
    model = ClipEvaluator()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    data = MovingDigits("train", length=steps * batch_size, seed=seed)  # fresh clips every step
    aug_gen = torch.Generator().manual_seed(seed)
    parts = dict(model=model, opt=opt, sched=sched, augmentation=aug_gen)
    progress = BuildState(Path(out_dir) / ".evaluator-build-state.pt", dict(
        steps=steps, batch_size=batch_size, lr=lr, seed=seed), every=save_every)
    saved = progress.resume(parts)
    done, smoothed = (saved["step"], saved["smoothed"]) if saved else (0, None)
    start = time.time()
    bar = tqdm(range(done, steps), initial=done, total=steps, desc="evaluator", dynamic_ncols=True)
    for step in bar:
        items = [data[i] for i in range(step * batch_size, (step + 1) * batch_size)]
        videos = augment(torch.stack([it["video"] for it in items]), aug_gen)
        loss = classification_loss(model, videos, items)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        bar.set_postfix(loss=f"{smoothed:.4f}")
        progress.save_if_due(step + 1, lambda: {**progress.snapshot(parts), "smoothed": smoothed})
    seconds = time.time() - start  # of this process

    model.eval().requires_grad_(False)
    save_evaluator(model, out_dir)
    progress.finish()
    videos, labels = clips_and_labels("eval", held_out, HELD_OUT_SEED)
    sigma = torch.full((len(videos),), 1.0)
    sub, sub_labels = videos[:reader_clips], {k: v[:reader_clips] for k, v in labels.items()}
    report = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
        "train_seconds": round(seconds, 1), "final_train_loss_smoothed": round(smoothed, 5),
        "heldout": {"split": "eval", "seed": HELD_OUT_SEED, "clips": held_out,
                    "accuracy": accuracy(videos, labels, model),
                    "accuracy_blurred_sigma1": accuracy(gaussian_blur(videos, sigma), labels, model)},
        "heldout_first_clips": {"clips": reader_clips,
                                "evaluator": accuracy(sub, sub_labels, model),
                                "evaluator_on_vae_reconstructions": accuracy(vae_reconstructions(sub), sub_labels, model),
                                "hand_reader": hand_reader_accuracy(sub, sub_labels)},
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "machine": platform.machine(),
    }
    (Path(out_dir) / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report
