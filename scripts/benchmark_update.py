"""What one stage-2 update costs against a teacher forward+backward on the same batch (the toy model).

    OMP_NUM_THREADS=1 python scripts/benchmark_update.py --batch 16 --rounds 32
    python scripts/benchmark_update.py --variant paper:adv.r1_every=1 --variant lazy4:adv.r1_every=4
    python scripts/benchmark_update.py --config configs/toy/reward.yaml   # the reward phase's update

One process, one thread, a world of one; the teacher copy is wrapped as the stages wrap their models
(the config's parallel section: FSDP2 per block), so both sides pay the same per-block overhead. The
teacher pass and every variant's update are timed interleaved, round after round, so that the
machine's load hits them alike. Prints each one's mean seconds and the mean over rounds of its ratio
to the same round's teacher pass. Lazy approximate R1 (adv.r1_every=k) pays the penalty on one update
in k: measure a multiple of k rounds (the default, 16, serves k = 1, 2, 4, 8, 16; the toy config's is 16).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def split_overrides(text: str) -> list[str]:
    """"a=1,b=[2,3],c={k: 4}" -> ["a=1", "b=[2,3]", "c={k: 4}"]: commas inside brackets belong to a value."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [part for part in (*parts, current) if part]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "toy" / "apt.yaml", help="stage-2 config (default: configs/toy/apt.yaml)")
    p.add_argument("--batch", type=int, default=16, help="clips per update (and per teacher pass; default: 16)")
    p.add_argument("--rounds", type=int, default=16,
                   help="measured interleaved rounds after one warm-up round (default: 16)")
    p.add_argument("--variant", action="append", default=[],
                   help="NAME:key=value,key=value (stage-2 config overrides; commas inside [] or {} belong to "
                        "the value); default: the config as it is")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, ratios that hold on a busy machine)")
    args = p.parse_args(argv)

    import torch

    from apt.adversarial.config import APTConfig
    from apt.adversarial.stage import AdversarialPostTraining
    from apt.core.config import load_config
    from apt.models.backbone import WanBackbone
    from apt.models.loading import load_components
    from apt.models.model_folder import resolve_model_dir
    from apt.training.distributed import DistInfo, init_distributed, parallelize_backbone, shutdown_distributed

    dist: DistInfo = init_distributed()
    torch.set_num_threads(args.threads)  # after init_distributed, which sets its own per-process default
    try:
        comps = load_components(resolve_model_dir("toy"))
        latent = comps.vae.latent_shape(9, 32, 32)
        g = torch.Generator().manual_seed(0)
        prompt = "a red seven moving up and to the left"
        batch = {"latent": torch.randn(args.batch, *latent, generator=g), "caption": [prompt] * args.batch,
                 "text": comps.text.encode([prompt] * args.batch)}
        variants = [v.partition(":") for v in args.variant] or [("config", ":", "")]
        stages = {}
        for name, _, overrides in variants:
            cfg = load_config(APTConfig, args.config, ["adv.generator_init=teacher", "adv.probe_every=0",
                                                       f"train.micro_batch_size={args.batch}",
                                                       f"train.global_batch_size={args.batch}",
                                                       *split_overrides(overrides)])
            torch.manual_seed(0)
            gen = WanBackbone(copy.deepcopy(comps.transformer.model))
            # its own teacher copy: with adv.distill_weight the stage keeps (and shards) it as its denoiser
            teacher_copy = WanBackbone(copy.deepcopy(comps.transformer.model))
            negative = comps.text.encode([cfg.adv.distill_negative_prompt]) if cfg.adv.distill_weight > 0 else None
            # the VAE: variants that decode G's samples (adv.rewards) run too
            stages[name] = AdversarialPostTraining(cfg, dist, teacher_copy, gen, previews=None, vae=comps.vae,
                                                   negative_text=negative)
        teacher = WanBackbone(copy.deepcopy(comps.transformer.model)).train()
        parallelize_backbone(teacher, load_config(APTConfig, args.config, ["adv.generator_init=teacher"]).parallel)

        def teacher_pass():
            x0, text = batch["latent"], batch["text"]
            t, eps = torch.rand(args.batch), torch.randn_like(x0)
            x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps
            (teacher(x_t, t, text) - (eps - x0)).square().mean().backward()
            teacher.zero_grad(set_to_none=True)

        def update(stage, step: int) -> None:
            """What the trainer does for one update: the step, its callbacks (the EMA), the metrics' sync."""
            metrics = stage.train_step([batch], step)
            for callback in stage.callbacks():
                callback.after_update(step)
            metrics.synced()

        timers = {"teacher forward+backward": teacher_pass}
        for name, stage in stages.items():
            counter = iter(range(10**9))
            timers[f"update ({name})"] = lambda stage=stage, counter=counter: update(stage, next(counter))
        seconds: dict[str, list[float]] = {k: [] for k in timers}
        for round_ in range(args.rounds + 1):
            for name, fn in timers.items():
                start = time.perf_counter()
                fn()
                if round_:  # the first round warms up allocators and lazy FSDP initialisation
                    seconds[name].append(time.perf_counter() - start)
        base = seconds["teacher forward+backward"]
        report = {}
        print(f"{'':<34}{'mean s':>10}{'ratio':>8}   (batch {args.batch}, {args.threads} thread(s), "
              f"{args.rounds} rounds)")
        for name, values in seconds.items():
            ratio = statistics.mean(v / b for v, b in zip(values, base))
            report[name] = {"mean_seconds": statistics.mean(values), "ratio": ratio}
            print(f"{name:<34}{statistics.mean(values):>10.3f}{ratio:>8.2f}")
        return report
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    main()
