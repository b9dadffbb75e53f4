"""Real-size serving and training figures on GPUs, with random weights (no download): Wan 2.1 T2V 1.3B at
1280x720x49 in bf16, per phase with peak memory, beside the paper's Table 8; and one stage-2 update at
480p (832x480x49) under FSDP2, its peak memory beside apt-estimate's figure.

    python scripts/benchmark_gpu.py --json gpu-1.json                        # one GPU
    torchrun --nproc_per_node 8 scripts/benchmark_gpu.py --json gpu-8.json  # 8 GPUs: context parallel DiT,
                                                                             # VAE tiles over the ranks, FSDP2
    python scripts/benchmark_gpu.py --tiny                                   # CPU, tiny widths: checks the script
    python scripts/benchmark_gpu.py --estimate                               # no GPU: the arithmetic for 1/4/8

Serving phases (one clip): umT5-XXL text encoder (random; --no-text leaves it out, 11 GB), the one-step
DiT (one forward), the teacher's DiT estimated as 25 CFG steps = 25 x one measured CFG step (batch 2),
the VAE decode in bf16 (untiled in one process; one tile per rank under torchrun), and the fast
decoder (random weights of the default 8x config: its speed, not its quality). Each phase runs once
to warm up, then --repeats times; the median is reported, with torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

PAPER_TABLE8 = {"1 H100": {"text": 0.28, "dit": 2.65, "vae_decode": 3.10, "total": 6.03},
                "8 H100": {"total": 1.97}}  # the paper's 8B model, 1280x720x49 (2 s at 24 fps)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, dropout_rate=0.0, is_encoder_decoder=False,
                feed_forward_proj="gated-gelu")
TINY_TEXT = dict(vocab_size=384, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                 relative_attention_num_buckets=8, dropout_rate=0.0, is_encoder_decoder=False)
TINY_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16,
                        out_channels=16, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                        qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)
TINY_VAE = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])
# the reward phase's scorer: a CLIP ViT-L/14 image tower (PickScore's and HPS v2's size), random weights
CLIP_L14_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14, projection_dim=768)
TINY_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                   patch_size=8, projection_dim=8)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wan2.1-1.3b", choices=("wan2.1-1.3b", "wan2.1-14b"), help="Wan config")
    p.add_argument("--height", type=int, default=720, help="serving clip height (default 720)")
    p.add_argument("--width", type=int, default=1280, help="serving clip width (default 1280)")
    p.add_argument("--frames", type=int, default=49, help="clip frames, serving and training (default 49)")
    p.add_argument("--train-height", type=int, default=480, help="stage-2 update height (default 480)")
    p.add_argument("--train-width", type=int, default=832, help="stage-2 update width (default 832)")
    p.add_argument("--repeats", type=int, default=3, help="measured runs per phase after one warm-up")
    p.add_argument("--no-text", action="store_true", help="leave out the umT5-XXL text encoder")
    p.add_argument("--no-train", action="store_true", help="leave out the stage-2 update")
    p.add_argument("--tiny", action="store_true", help="tiny widths on CPU at 64x64x9 (the script's own test)")
    p.add_argument("--estimate", action="store_true",
                   help="print the arithmetic estimate for 1, 4 and 8 GPUs beside the paper's Table 8 (no GPU)")
    p.add_argument("--dit-mfu", type=float, default=0.4, help="--estimate: DiT fraction of H100 bf16 peak")
    p.add_argument("--decode-mfu", type=float, default=0.2, help="--estimate: decoders' fraction of the peak")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv)
    if args.tiny:
        args.height, args.width, args.frames, args.train_height, args.train_width = 64, 64, 9, 32, 32
    return args


def timed(fn, repeats: int, device) -> tuple[float, float, object]:
    """(median seconds, peak GiB allocated, last result) of fn() after one warm-up run."""
    import torch

    out = fn()
    seconds = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        tick = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - tick)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None  # CPU: not measured
    return statistics.median(seconds), peak, out


def random_(module, std: float = 0.02):
    import torch

    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def serving(args, dist_info, device, dtype) -> dict:
    import torch

    from apt.inference.decoders import tile_grid
    from apt.inference.engine import split_sequence
    from apt.models.backbone import WanBackbone
    from apt.models.fast_decoder import FastDecoder, config_for_vae
    from apt.models.generator import OneStepGenerator
    from apt.models.vae import VideoVAE
    from apt.planning.estimate import WAN_MODELS

    world = dist_info.world_size if dist_info else 1
    rank = dist_info.rank if dist_info else 0
    model_cfg = TINY_TRANSFORMER if args.tiny else WAN_MODELS[args.model]
    torch.manual_seed(0)  # every rank builds the same random weights
    backbone = random_(WanBackbone.empty(dict(model_cfg), device)).cast(dtype).eval()
    from diffusers import AutoencoderKLWan

    vae_kwargs = TINY_VAE if args.tiny else {}
    z = vae_kwargs.get("z_dim", 16)
    vae = VideoVAE(AutoencoderKLWan(**vae_kwargs, latents_mean=[0.0] * z, latents_std=[1.0] * z)
                   .to(device, dtype).eval().requires_grad_(False))
    shape = vae.latent_shape(args.frames, args.height, args.width)
    text_dim = model_cfg["text_dim"]
    results = {"latent_shape": list(shape), "tokens": shape[1] * shape[2] * shape[3] // 4}
    if world > 1:
        import math

        ulysses = math.gcd(world, model_cfg["num_attention_heads"])  # Ulysses splits heads; ring the rest
        ring = world // ulysses
        if ring > 1:  # ring attention needs the log-sum-exp: torch's cuDNN attention returns it
            backbone.set_attention_backend("_native_cudnn")
        split_sequence(backbone, shape, world, ring)
        results["context_parallel"] = {"ulysses": ulysses, "ring": ring}
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(1, *shape, generator=g).to(device)
    text = torch.randn(1, 512, text_dim, generator=g).to(device, dtype)
    gen = OneStepGenerator(backbone)
    with torch.no_grad():
        if not args.no_text:
            from transformers import UMT5Config, UMT5EncoderModel

            with torch.device(device):
                encoder = random_(UMT5EncoderModel(UMT5Config(**(TINY_TEXT if args.tiny else UMT5_XXL)))).to(dtype)
            ids = torch.randint(0, 256, (1, 512), device=device)
            secs, peak, _ = timed(lambda: encoder(input_ids=ids).last_hidden_state, args.repeats, device)
            results["text_encoder"] = {"seconds": secs, "peak_gib": peak}
            del encoder
        secs, peak, latent = timed(lambda: gen.sample(noise, text), args.repeats, device)
        results["dit_one_step"] = {"seconds": secs, "peak_gib": peak}
        t = torch.full((2,), 0.5, device=device)
        cfg_step = lambda: backbone(noise.expand(2, *shape).to(dtype), t, text.expand(2, -1, -1))  # noqa: E731
        secs, peak, _ = timed(cfg_step, args.repeats, device)
        results["dit_teacher_cfg_step"] = {"seconds": secs, "peak_gib": peak}
        results["dit_teacher_25_steps_estimated"] = {"seconds": 25 * secs}
        tiles = tile_grid("auto", world)
        if tiles:
            decode = lambda: vae.decode_tiles(latent, *tiles, rank=rank, world_size=world)  # noqa: E731
        else:
            decode = lambda: vae.decode(latent)  # noqa: E731
        secs, peak, video = timed(decode, args.repeats, device)
        results["vae_decode"] = {"seconds": secs, "peak_gib": peak, "tiles": list(tiles) if tiles else None}
        fast = random_(FastDecoder(config_for_vae(vae.vae.config))).to(device, dtype).eval()
        secs, peak, _ = timed(lambda: fast.decode(latent), args.repeats, device)
        results["fast_decoder"] = {"seconds": secs, "peak_gib": peak, "config": list(fast.config.channels)}
    text_s = results.get("text_encoder", {}).get("seconds", 0.0)
    results["one_step_total_vae"] = text_s + results["dit_one_step"]["seconds"] + results["vae_decode"]["seconds"]
    results["one_step_total_fast"] = text_s + results["dit_one_step"]["seconds"] + results["fast_decoder"]["seconds"]
    results["teacher_total_estimated"] = (text_s + results["dit_teacher_25_steps_estimated"]["seconds"]
                                          + results["vae_decode"]["seconds"])
    return results


def random_vision_reward(tiny: bool):
    """A reward module (apt/rewards/base.py's contract) scoring frames by their random CLIP image embedding:
    the compute and memory of an image reward, not a meaningful score."""
    import torch
    import torch.nn.functional as F
    from einops import rearrange
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    class RandomVisionReward(torch.nn.Module):
        name = "random_clip_vision"

        def __init__(self):
            super().__init__()
            config = CLIPVisionConfig(**(TINY_VISION if tiny else CLIP_L14_VISION))
            self.model = random_(CLIPVisionModelWithProjection(config)).requires_grad_(False)
            self.size = config.image_size

        def forward(self, videos, prompts):
            frames = rearrange(videos, "b c f h w -> (b f) c h w").float()
            frames = F.interpolate(frames, size=(self.size, self.size), mode="bilinear", antialias=True)
            embeds = self.model(pixel_values=frames.to(self.model.dtype)).image_embeds.float()
            return rearrange(embeds.norm(dim=-1), "(b f) -> b f", b=videos.shape[0]).mean(1)

    return RandomVisionReward()


def training_update(args, dist_info, device, phase: str) -> dict:
    """One update (micro-batch 1 per rank) of stage 1 ("distill"), stage 2 ("apt") or the reward phase
    ("reward": stage 2 with reward feedback through a random CLIP ViT-L/14 vision tower on the first
    decoded latent frame), as training runs it: FSDP2, bf16, AC, the model's config; peak memory beside
    apt-estimate's figure for the same setup."""
    import torch

    from apt.adversarial.config import APTConfig
    from apt.core.config import load_config
    from apt.models.backbone import WanBackbone
    from apt.planning.estimate import WAN_MODELS, Setup, estimate
    from distill.config import DistillConfig

    root = Path(__file__).resolve().parents[1]
    world = dist_info.world_size
    model_cfg = TINY_TRANSFORMER if args.tiny else WAN_MODELS[args.model]
    name = {"distill": "distill", "apt": "apt-video", "reward": "reward"}[phase]
    config = root / "configs" / ("toy/" + ("distill" if phase == "distill" else "apt") + ".yaml" if args.tiny
                                 else f"{args.model}/{name}.yaml")
    overrides = ["train.micro_batch_size=1", f"train.global_batch_size={world}"]
    if phase != "distill":
        overrides += ["adv.generator_init=teacher", "adv.probe_every=0", "adv.discriminator_init=", "adv.rewards=[]"]
    if args.tiny:
        overrides += ["parallel.mixed_precision=fp32"]
    cfg = load_config(DistillConfig if phase == "distill" else APTConfig, config, overrides)
    torch.manual_seed(0)
    teacher = random_(WanBackbone.empty(dict(model_cfg), "cpu")).to(device)
    shape = (model_cfg["in_channels"], (args.frames - 1) // 4 + 1, args.train_height // 8, args.train_width // 8)
    text_shape = (1, 512, model_cfg["text_dim"])
    batch = {"latent": torch.randn(1, *shape, device=device), "caption": ["a random clip"],
             "text": torch.randn(*text_shape, device=device)}
    reward_params = 0
    if phase == "distill":
        from distill.stage import ConsistencyDistillation

        stage = ConsistencyDistillation(cfg, dist_info, teacher, torch.randn(*text_shape), previews=None)
    else:
        from apt.adversarial.stage import AdversarialPostTraining

        generator = WanBackbone.empty(dict(model_cfg), "cpu")
        generator.load_state_dict(teacher.state_dict())
        stage = AdversarialPostTraining(cfg, dist_info, teacher, generator.to(device), previews=None)
    if phase == "reward":
        from diffusers import AutoencoderKLWan

        from apt.adversarial.reward_feedback import RewardFeedback
        from apt.models.vae import VideoVAE
        from apt.rewards.base import Rewards

        z = 16
        vae = VideoVAE(AutoencoderKLWan(**(TINY_VAE if args.tiny else {}), latents_mean=[0.0] * z,
                                        latents_std=[1.0] * z).to(device, torch.bfloat16 if not args.tiny else
                                                                  torch.float32).eval().requires_grad_(False))
        reward = random_vision_reward(args.tiny).to(device)
        reward_params = sum(p.numel() for p in reward.parameters())
        stage.g_step.rewards = RewardFeedback(Rewards([(reward, 1.0)]), vae, latent_frames=1, checkpointing=True)
    counter = iter(range(10**9))

    def update() -> dict:
        """One update as the trainer runs it: the step, its callbacks (the EMA), the metrics' sync."""
        step = next(counter)
        metrics = stage.train_step([batch], step)
        for callback in stage.callbacks():
            callback.after_update(step)
        return metrics.synced()

    secs, peak, metrics = timed(update, args.repeats, device)
    est = estimate(Setup(model=dict(model_cfg), stage="distill" if phase == "distill" else "apt", gpus=world,
                         micro_batch=1, frames=args.frames, height=args.train_height, width=args.train_width,
                         compute_bytes=4 if args.tiny else 2, reward_latent_frames=1 if phase == "reward" else 0,
                         vae_model=TINY_VAE if args.tiny else {},
                         reward_params=reward_params))
    return {"config": str(config.relative_to(root)), "size": f"{args.train_width}x{args.train_height}x{args.frames}",
            "ranks": world, "seconds_per_update": secs, "peak_gib": peak,
            "estimate_gib": est["total_bytes"] / 2**30, "loss_finite": all(
                v == v for v in metrics.values() if isinstance(v, float)),
            **({"reward": metrics.get("reward")} if phase == "reward" else {})}


def print_estimate(args) -> dict:
    from apt.planning.estimate import WAN_MODELS
    from apt.planning.serving import serving_estimate

    rows = {g: serving_estimate(WAN_MODELS[args.model], g, args.frames, args.height, args.width, args.dit_mfu,
                                args.decode_mfu) for g in (1, 4, 8)}
    f = rows[1]["flops"]
    print(f"{args.model} at {args.width}x{args.height}x{args.frames}, estimated: DiT {f['dit_forward'] / 1e12:.0f} "
          f"TFLOP per forward at {args.dit_mfu:.0%} of H100 bf16 peak, VAE decode {f['vae_decode'] / 1e12:.0f} TFLOP "
          f"and fast decoder {f['fast_decode'] / 1e12:.1f} TFLOP at {args.decode_mfu:.0%}; communication not counted")
    print(f"{'GPUs':<6}{'text':>8}{'DiT 1-step':>12}{'VAE decode':>12}{'fast dec.':>11}{'1-step+VAE':>12}"
          f"{'1-step+fast':>13}{'teacher 25+CFG':>16}")
    for g, r in rows.items():
        s = r["seconds"]
        print(f"{g:<6}{s['text']:>8.3f}{s['dit_one_step']:>12.3f}{s['vae_decode']:>12.3f}{s['fast_decode']:>11.3f}"
              f"{s['one_step_vae']:>12.2f}{s['one_step_fast']:>13.2f}{s['teacher']:>16.1f}")
    print("paper, Table 8 (its 8B model and VAE): 1 H100 6.03 s (text 0.28, DiT 2.65, VAE 3.10); 8 H100 1.97 s")
    return {str(g): r for g, r in rows.items()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.estimate:
        report = print_estimate(args)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return report
    import torch

    from apt.training.distributed import init_distributed, shutdown_distributed

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on GPUs, or --tiny for the CPU check of the script")
    dist_info = init_distributed()  # torchrun's ranks, or a world of one
    device = dist_info.device if not args.tiny else torch.device("cpu")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    try:
        report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  "ranks": dist_info.world_size, "model": "tiny" if args.tiny else args.model,
                  "size": f"{args.width}x{args.height}x{args.frames}", "dtype": str(dtype).removeprefix("torch."),
                  "torch": torch.__version__, "paper_table8": PAPER_TABLE8}
        report["serving"] = serving(args, dist_info, device, dtype)
        if not args.no_train:  # one update of each training phase, at --train-height x --train-width
            for phase, key in (("distill", "stage1_update"), ("apt", "stage2_update"), ("reward", "reward_update")):
                report[key] = training_update(args, dist_info, device, phase)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        if dist_info.rank == 0:
            print(json.dumps(report, indent=2))
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return report
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # see apt.core.command.exit_cleanly
