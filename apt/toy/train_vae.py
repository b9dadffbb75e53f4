"""Train the toy Wan VAE (AutoencoderKLWan) on moving-digit clips from scratch."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from tqdm import tqdm

from apt.toy.components import VAE_CONFIG
from apt.toy.report import record
from apt.toy.world import MovingDigits
from apt.training.build_state import BuildState


def decode_unclamped(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """AutoencoderKLWan.decode without its final clamp to [-1, 1].

    The clamp zeroes the gradient of any pixel that overshoots; early in training the decoder
    overshoots to black everywhere and the digits never come back. Same frame-causal loop as
    diffusers' _decode (tested equal up to the clamp).
    """
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(x.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                  first_chunk=i == 0))
    vae.clear_cache()
    return torch.cat(frames, 2)


def reconstruction_loss(rec: torch.Tensor, video: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """MSE + L1, with the (sparse) digit pixels weighted up so 'all black' is not a resting point."""
    weight = 1 + foreground_weight * (video.amax(1, keepdim=True) > -0.9).float()
    err = rec - video
    return (weight * (err.square() + err.abs())).mean() / weight.mean()


def _batches(dataset, batch_size, first: int = 0):
    for start in range(first * batch_size, len(dataset) - batch_size + 1, batch_size):
        yield torch.stack([dataset[i]["video"] for i in range(start, start + batch_size)])


@torch.no_grad()
def latent_statistics(vae: AutoencoderKLWan, clips: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of posterior means: the VAE config's latents_mean/latents_std."""
    mus = torch.cat([vae.encode(c).latent_dist.mode() for c in clips.split(16)])
    dims = [0, 2, 3, 4]
    return mus.mean(dims).tolist(), mus.std(dims).clamp_min(1e-3).tolist()


def heldout_clips(seed: int, n: int = 64) -> torch.Tensor:
    held = MovingDigits("eval", length=n, seed=seed)
    return torch.stack([held[i]["video"] for i in range(len(held))])


@torch.no_grad()
def round_trip(vae: AutoencoderKLWan, clips: torch.Tensor) -> torch.Tensor:
    """The clips through the VAE: posterior mode, decoded (clamped to [-1, 1] as it is shown)."""
    return torch.cat([vae.decode(vae.encode(c).latent_dist.mode()).sample for c in clips.split(16)])


def reconstruction_psnr(rec: torch.Tensor, clips: torch.Tensor) -> tuple[float, float]:
    mse = F.mse_loss(rec.clamp(-1, 1), clips).item()
    return mse, 10 * math.log10(4.0 / mse)  # peak-to-peak range of [-1, 1] is 2


def _cosine_with_warmup(opt, steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps)))


def train_vae(model_dir: Path, steps: int = 2000, batch_size: int = 8, lr: float = 1e-3, kl_weight: float = 1e-5,
              foreground_weight: float = 5.0, seed: int = 0, save_every: int = 200) -> AutoencoderKLWan:
    """The toy VAE from scratch. Progress is saved every save_every steps (the posterior samples draw
    from torch's global generator, saved with it): after a crash the same command resumes where it was."""
    torch.manual_seed(seed)
    z = VAE_CONFIG["z_dim"]
    vae = AutoencoderKLWan(**VAE_CONFIG, latents_mean=[0.0] * z, latents_std=[1.0] * z)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = _cosine_with_warmup(opt, steps)
    data = MovingDigits("train", length=steps * batch_size, seed=seed)
    progress = BuildState(Path(model_dir) / ".vae-build-state.pt", dict(
        steps=steps, batch_size=batch_size, lr=lr, kl_weight=kl_weight, foreground_weight=foreground_weight,
        seed=seed), every=save_every)
    parts = dict(vae=vae, opt=opt, sched=sched)
    saved = progress.resume(parts)
    ema_rec, done = (saved["ema_rec"], saved["step"]) if saved else (None, 0)
    start = time.time()
    bar = tqdm(_batches(data, batch_size, done), initial=done, total=steps, desc="toy VAE", dynamic_ncols=True)
    for step, video in enumerate(bar, done + 1):
        post = vae.encode(video).latent_dist
        rec = decode_unclamped(vae, post.sample())
        rec_loss = reconstruction_loss(rec, video, foreground_weight)
        kl = post.kl().mean() / video[0].numel()
        loss = rec_loss + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_rec = rec_loss.item() if ema_rec is None else 0.95 * ema_rec + 0.05 * rec_loss.item()
        bar.set_postfix(rec=f"{ema_rec:.4f}", kl=f"{kl.item():.3f}")
        progress.save_if_due(step, lambda: {**progress.snapshot(parts), "ema_rec": ema_rec})
    seconds = time.time() - start  # of this process

    vae.eval()
    clips = heldout_clips(seed + 1)
    mse, psnr = reconstruction_psnr(round_trip(vae, clips), clips)
    mean, std = latent_statistics(vae, clips)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    vae.save_pretrained(Path(model_dir) / "vae")
    progress.finish()
    record(model_dir, "vae", dict(steps=steps, batch_size=batch_size, lr=lr, kl_weight=kl_weight, foreground_weight=foreground_weight, seed=seed,
                                  seconds=round(seconds, 1), final_train_rec_loss=round(ema_rec, 5),
                                  heldout_mse=round(mse, 5), heldout_psnr_db=round(psnr, 2),
                                  parameters=sum(p.numel() for p in vae.parameters())))
    return vae


def finetune_vae_decoder(model_dir: Path, steps: int = 1500, batch_size: int = 8, lr: float = 3e-4,
                         foreground_weight: float = 5.0, seed: int = 11, save_every: int = 200) -> AutoencoderKLWan:
    """Train the decoder of model_dir's VAE further on fresh clips (seed `seed`), the encoder frozen.

    The latent space stays exactly as it was (encoder, latents_mean and latents_std untouched), so the
    teacher and every run trained on it stay valid: only how latents look as video changes. The
    decoder learns from the encoder's posterior mode, the latent every stage trains on. Progress is
    saved every save_every steps: after a crash the same command resumes where it was.
    """
    from apt.core import video_metrics as metrics

    vae = AutoencoderKLWan.from_pretrained(Path(model_dir) / "vae")
    for n, p in vae.named_parameters():
        p.requires_grad_(n.startswith(("decoder.", "post_quant_conv.")))
    trained = [p for p in vae.parameters() if p.requires_grad]
    held = heldout_clips(1)
    vae.eval()
    psnr_before = reconstruction_psnr(round_trip(vae, held), held)[1]
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    sched = _cosine_with_warmup(opt, steps)
    data = MovingDigits("train", length=steps * batch_size, seed=seed)
    progress = BuildState(Path(model_dir) / ".vae-decoder-build-state.pt", dict(
        steps=steps, batch_size=batch_size, lr=lr, foreground_weight=foreground_weight, seed=seed), every=save_every)
    parts = dict(vae=vae, opt=opt, sched=sched)
    saved = progress.resume(parts)
    ema_rec, done = (saved["ema_rec"], saved["step"]) if saved else (None, 0)
    start = time.time()
    vae.train()
    bar = tqdm(_batches(data, batch_size, done), initial=done, total=steps, desc="toy VAE decoder",
               dynamic_ncols=True)
    for step, video in enumerate(bar, done + 1):
        with torch.no_grad():
            z = vae.encode(video).latent_dist.mode()
        rec_loss = reconstruction_loss(decode_unclamped(vae, z), video, foreground_weight)
        opt.zero_grad(set_to_none=True)
        rec_loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        ema_rec = rec_loss.item() if ema_rec is None else 0.95 * ema_rec + 0.05 * rec_loss.item()
        bar.set_postfix(rec=f"{ema_rec:.4f}")
        progress.save_if_due(step, lambda: {**progress.snapshot(parts), "ema_rec": ema_rec})
    seconds = time.time() - start  # of this process

    vae.eval()
    rec = round_trip(vae, held)
    mse, psnr = reconstruction_psnr(rec, held)
    vae.requires_grad_(True)
    vae.save_pretrained(Path(model_dir) / "vae")
    progress.finish()
    record(model_dir, "vae_decoder_finetune", dict(
        steps=steps, batch_size=batch_size, lr=lr, foreground_weight=foreground_weight, seed=seed,
        seconds=round(seconds, 1), final_train_rec_loss=round(ema_rec, 5), heldout_psnr_db_before=round(psnr_before, 2),
        heldout_mse=round(mse, 5), heldout_psnr_db=round(psnr, 2),
        heldout_edge_sharpness_ratio=round(metrics.edge_sharpness(rec) / metrics.edge_sharpness(held), 3)))
    return vae
