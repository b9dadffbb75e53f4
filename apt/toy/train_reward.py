"""Train the toy alignment reward (apt/toy/reward.py) contrastively on training-split toy clips.

CLIP's loss on batches of (clip, caption): each clip must pick its caption among the batch's, and each
caption its clip. Clips come from the training split (training glyphs and combinations) under a seed
stream of their own (REWARD_SEED); the held-out report reads attributes back by caption retrieval
over all 480 captions on eval-split clips (held-out glyphs and combinations), which training never
sees. Augmentation (its own, not the evaluator's): per clip a box blur, a brightness scale and noise,
so that soft generated clips are scored for what they show.
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

from apt.toy.reward import REWARD_DIR, ToyAlignmentModel, save_reward_model
from apt.toy.world import COLOUR_NAMES, DIGIT_WORDS, DIRECTION_NAMES, MovingDigits, caption
from apt.training.build_state import BuildState

REWARD_SEED = 7  # the evaluator trains on seed 0's clips; the reward on its own
HELD_OUT_SEED = 3


def soften(videos: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per clip, each with probability 1/2: a 3x3 box blur, a brightness scale in [0.7, 1], noise of std <= 0.1."""
    b = videos.shape[0]
    pick = lambda: (torch.rand(b, generator=generator) < 0.5).view(b, 1, 1, 1, 1)  # noqa: E731
    frames = videos.transpose(1, 2).reshape(-1, 3, *videos.shape[-2:])
    blurred = F.avg_pool2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(pick(), blurred.view(b, -1, 3, *videos.shape[-2:]).transpose(1, 2), videos)
    scale = 0.7 + 0.3 * torch.rand(b, generator=generator).view(b, 1, 1, 1, 1)
    x = torch.where(pick(), (x + 1) * scale - 1, x)
    noise = 0.1 * torch.rand(b, generator=generator).view(b, 1, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    return torch.where(pick(), x + noise, x).clamp(-1, 1)


def contrastive_loss(model: ToyAlignmentModel, videos: torch.Tensor, captions: list[str]) -> torch.Tensor:
    v, t = model.embed_videos(videos), model.embed_captions(captions)
    logits = model.logit_scale.exp().clamp(max=100) * v @ t.T
    # clips that share a caption are not negatives of each other
    same = torch.tensor([[a == b for b in captions] for a in captions])
    logits = logits.masked_fill(same & ~torch.eye(len(captions), dtype=torch.bool), float("-inf"))
    target = torch.arange(len(captions))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def retrieval_accuracy(model: ToyAlignmentModel, n: int = 500, seed: int = HELD_OUT_SEED) -> dict[str, float]:
    """Eval-split clips: the best of all 480 moving captions, read back as digit / colour / direction."""
    data = MovingDigits("eval", length=n, seed=seed)
    items = [data[i] for i in range(n)]
    combos = [(d, c, m) for d in range(len(DIGIT_WORDS)) for c in range(len(COLOUR_NAMES))
              for m in range(len(DIRECTION_NAMES))]
    text = model.embed_captions([caption(*k) for k in combos])
    best = (model.embed_videos(torch.stack([it["video"] for it in items])) @ text.T).argmax(1)
    hits = {key: [combos[int(j)][i] == it[key] for j, it in zip(best, items)]
            for i, key in enumerate(("digit", "colour", "direction"))}
    out = {k: sum(v) / n for k, v in hits.items()}
    out["all"] = sum(all(x) for x in zip(*hits.values())) / n
    return {k: round(v, 4) for k, v in out.items()}


def train_reward(out_dir: Path = REWARD_DIR, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3,
                 seed: int = REWARD_SEED, save_every: int = 200) -> dict:
    """The toy alignment reward from scratch. Progress is saved every save_every steps: after a crash the same
    command resumes where it was."""
    torch.manual_seed(seed)
    model = ToyAlignmentModel()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    data = MovingDigits("train", length=steps * batch_size, seed=seed)  # fresh clips every step
    aug = torch.Generator().manual_seed(seed)
    parts = dict(model=model, opt=opt, sched=sched, augmentation=aug)
    progress = BuildState(Path(out_dir) / ".reward-build-state.pt", dict(
        steps=steps, batch_size=batch_size, lr=lr, seed=seed), every=save_every)
    saved = progress.resume(parts)
    done, smoothed = (saved["step"], saved["smoothed"]) if saved else (0, None)
    start = time.time()
    bar = tqdm(range(done, steps), initial=done, total=steps, desc="toy reward", dynamic_ncols=True)
    for step in bar:
        items = [data[i] for i in range(step * batch_size, (step + 1) * batch_size)]
        videos = soften(torch.stack([it["video"] for it in items]), aug)
        loss = contrastive_loss(model, videos, [it["caption"] for it in items])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        smoothed = loss.item() if smoothed is None else 0.95 * smoothed + 0.05 * loss.item()
        bar.set_postfix(loss=f"{smoothed:.4f}")
        progress.save_if_due(step + 1, lambda: {**progress.snapshot(parts), "smoothed": smoothed})
    seconds = time.time() - start  # of this process
    model.eval().requires_grad_(False)
    save_reward_model(model, out_dir)
    progress.finish()
    report = {
        "parameters": sum(p.numel() for p in model.parameters()), "steps": steps, "batch_size": batch_size,
        "lr": lr, "seed": seed, "split": "train", "train_seconds": round(seconds, 1),
        "final_train_loss_smoothed": round(smoothed, 5),
        "heldout_retrieval": {"split": "eval", "seed": HELD_OUT_SEED, "clips": 500,
                              "accuracy": retrieval_accuracy(model)},
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "machine": platform.machine(),
    }
    (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
