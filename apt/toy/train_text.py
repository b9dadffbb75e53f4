"""Train the toy UMT5 text encoder (byte-level tokenizer, no vocabulary file) from scratch.

Objective: from the mean of its token states, linear probes must read off digit, colour and
motion. That makes the states carry exactly what the teacher needs to attend to.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

from apt.models.text import TextEncoder
from apt.toy.captions import random_captions
from apt.toy.components import MAX_TEXT_TOKENS, TEXT_ENCODER_CONFIG
from apt.toy.report import record
from apt.toy.world import COLOUR_NAMES, DIRECTION_NAMES
from apt.training.build_state import BuildState


class AttributeProbes(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.digit = torch.nn.Linear(dim, 10)
        self.colour = torch.nn.Linear(dim, len(COLOUR_NAMES))
        self.direction = torch.nn.Linear(dim, len(DIRECTION_NAMES) + 1)

    def forward(self, states, mask):
        pooled = states.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return self.digit(pooled), self.colour(pooled), self.direction(pooled)


def _loss_and_acc(text: TextEncoder, probes, texts, labels):
    ids, mask = text.tokenize(texts)
    logits = probes(text.forward_tokens(ids, mask), mask.float())
    y = torch.from_numpy(labels)
    loss = sum(F.cross_entropy(lg, y[:, k]) for k, lg in enumerate(logits))
    acc = torch.stack([(lg.argmax(-1) == y[:, k]).float().mean() for k, lg in enumerate(logits)])
    return loss, acc


def train_text_encoder(model_dir: Path, steps: int = 300, batch_size: int = 128, lr: float = 2e-3,
                       seed: int = 0, save_every: int = 100) -> TextEncoder:
    """The toy text encoder from scratch. Progress is saved every save_every steps: after a crash the same
    command resumes where it was."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoder = UMT5EncoderModel(UMT5Config(**TEXT_ENCODER_CONFIG))
    text = TextEncoder(ByT5Tokenizer(model_max_length=MAX_TEXT_TOKENS), encoder, MAX_TEXT_TOKENS)
    probes = AttributeProbes(text.dim)
    params = list(encoder.parameters()) + list(probes.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    # the captions draw from rng, the encoder's dropout from torch's global generator (saved with the state)
    parts = dict(encoder=encoder, probes=probes, opt=opt, sched=sched, captions=rng)
    progress = BuildState(Path(model_dir) / ".text-build-state.pt", dict(
        steps=steps, batch_size=batch_size, lr=lr, seed=seed), every=save_every)
    saved = progress.resume(parts)
    done, last_loss = (saved["step"], saved["loss"]) if saved else (0, None)
    start = time.time()
    bar = tqdm(range(done, steps), initial=done, total=steps, desc="toy text encoder", dynamic_ncols=True)
    for step in bar:
        loss, acc = _loss_and_acc(text, probes, *random_captions(rng, batch_size))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last_loss = loss.item()
        bar.set_postfix(loss=f"{last_loss:.4f}", acc=f"{acc.min().item():.3f}")
        progress.save_if_due(step + 1, lambda: {**progress.snapshot(parts), "loss": last_loss})
    seconds = time.time() - start  # of this process
    encoder.eval()
    with torch.no_grad():
        _, held_acc = _loss_and_acc(text, probes, *random_captions(np.random.default_rng(seed + 1), 512, split="eval"))
    model_dir = Path(model_dir)
    encoder.save_pretrained(model_dir / "text_encoder")
    text.tokenizer.save_pretrained(model_dir / "tokenizer")  # its own folder: AutoTokenizer needs that
    progress.finish()
    record(model_dir, "text_encoder", dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                           seconds=round(seconds, 1), final_loss=round(last_loss, 5),
                                           heldout_probe_accuracy=dict(zip(("digit", "colour", "direction"),
                                                                           [round(a, 4) for a in held_acc.tolist()])),
                                           parameters=sum(p.numel() for p in encoder.parameters())))
    return text
