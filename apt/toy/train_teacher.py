"""Train the toy teacher (a 12-block WanTransformer3DModel) by rectified flow on toy latents.

Uses the already-trained toy VAE and text encoder from the same folder; clips are encoded once
(videos and 1-frame images), then the DiT trains on latents. Saves the EMA weights and writes the
folder as a complete WanPipeline (model_index.json, scheduler/) so diffusers itself can load it.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from apt.core import flow
from apt.models.backbone import WanBackbone
from apt.models.loading import load_components
from apt.toy.components import TRANSFORMER_CONFIG, write_manifest
from apt.toy.data import encode_toy_clips
from apt.toy.report import record
from apt.toy.world import MovingDigits, ToyWorldConfig
from apt.training.build_state import BuildState

SAMPLING_SHIFT = 3.0  # written into the folder's scheduler config
STATE_FILE = ".teacher-build-state.pt"  # a round's progress until it is saved, for a re-run to resume


def flow_matching_loss(model: WanBackbone, x0: torch.Tensor, text: torch.Tensor, generator=None) -> torch.Tensor:
    t = flow.sample_timesteps(x0.shape[0], generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    v = model(flow.add_noise(x0, eps, t), t, text)
    return F.mse_loss(v, flow.velocity_target(x0, eps))


def train_teacher(model_dir: Path, steps: int = 3000, batch_size: int = 64, lr: float = 5e-4,
                  num_videos: int = 6000, num_images: int = 1500, image_fraction: float = 0.2,
                  caption_dropout: float = 0.1, ema_decay: float = 0.999, seed: int = 0,
                  continue_training: bool = False, save_every: int = 200) -> WanBackbone:
    """continue_training: start from the folder's transformer/ (more steps on fresh clips) instead of
    from scratch; the build report then records both rounds. Progress is saved every save_every steps: after a
    crash the same command resumes where it was (bit for bit)."""
    from diffusers import WanTransformer3DModel

    model_dir = Path(model_dir)
    torch.manual_seed(seed)
    comps = load_components(model_dir, parts=("vae", "text_encoder", "tokenizer"))
    start = time.time()
    vids, vid_table, vid_rows, _ = encode_toy_clips(comps, MovingDigits("train", num_videos, seed),
                                                    desc="encode videos")
    imgs, img_table, img_rows, _ = encode_toy_clips(comps, MovingDigits("train", num_images, seed,
                                                                        ToyWorldConfig(frames=1)), desc="encode images")
    empty = comps.text.encode([""])  # caption dropout target = the negative prompt used for CFG
    encode_seconds = time.time() - start

    previous = None
    if continue_training:
        model = WanBackbone.from_pretrained(model_dir)
        previous = json.loads((model_dir / "build_report.json").read_text()).get("transformer")
    else:
        model = WanBackbone(WanTransformer3DModel(**TRANSFORMER_CONFIG))
    model.train()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * (0.55 + 0.45 * math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(seed)
    start, ema_loss, done = time.time(), None, 0
    progress = BuildState(model_dir / STATE_FILE, dict(
        steps=steps, batch_size=batch_size, lr=lr, num_videos=num_videos, num_images=num_images,
        image_fraction=image_fraction, caption_dropout=caption_dropout, ema_decay=ema_decay, seed=seed,
        continue_training=continue_training), every=save_every)
    parts = dict(model=model, ema=ema, opt=opt, sched=sched, gen=gen)
    saved = progress.resume(parts)
    if saved is not None:
        done, ema_loss = saved["step"], saved["ema_loss"]
    bar = tqdm(range(done, steps), initial=done, total=steps, desc="toy teacher", dynamic_ncols=True)
    for step in bar:
        use_images = torch.rand((), generator=gen).item() < image_fraction
        x, table, rows = (imgs, img_table, img_rows) if use_images else (vids, vid_table, vid_rows)
        idx = torch.randint(len(x), (batch_size,), generator=gen)
        text = table[rows[idx]]
        drop = torch.rand(batch_size, generator=gen) < caption_dropout
        text = torch.where(drop[:, None, None], empty.expand_as(text), text)
        loss = flow_matching_loss(model, x[idx], text, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - ema_decay)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema_loss:.4f}")
        progress.save_if_due(step + 1, lambda: {**progress.snapshot(parts), "ema_loss": ema_loss})
    seconds = time.time() - start  # of this process: a resumed round's earlier part is not counted
    save_pipeline_folder(model_dir, ema.model, comps)
    progress.finish()
    record(model_dir, "transformer", dict(steps=steps, batch_size=batch_size, lr=lr, num_videos=num_videos,
                                          num_images=num_images, caption_dropout=caption_dropout, ema_decay=ema_decay,
                                          seed=seed, encode_seconds=round(encode_seconds, 1), seconds=round(seconds, 1),
                                          final_loss_smoothed=round(ema_loss, 5),
                                          parameters=sum(p.numel() for p in model.parameters()),
                                          continued_from=previous))
    return ema


def save_pipeline_folder(model_dir: Path, transformer, comps) -> None:
    """Write the whole folder through WanPipeline.save_pretrained: model_index.json and scheduler/ included."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    pipe = WanPipeline(tokenizer=comps.text.tokenizer, text_encoder=comps.text.encoder, vae=comps.vae.vae,
                       transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=SAMPLING_SHIFT))
    pipe.save_pretrained(model_dir)
    write_manifest(model_dir)
    # a continued teacher remembers the folder it was loaded from; keep build paths out of the shipped config
    for config in Path(model_dir).glob("*/config.json"):
        data = json.loads(config.read_text())
        if data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
