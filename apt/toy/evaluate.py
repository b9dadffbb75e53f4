"""apt-evaluate's options and run: the toy teacher and trained one-step generators on held-out prompts,
the results written as table.md, metrics.json and grid.png (the command: apt/cli/evaluate.py; the
evaluation itself: apt/toy/evaluation.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from apt.core.config import ConfigError, option


@dataclass
class EvaluateConfig:
    model: str = option("toy", "teacher folder the runs started from ('toy' = the shipped toy teacher)")
    teacher_steps: int = option(25, "teacher sampling steps; 0 leaves the teacher out")
    cfg: float = option(5.0, "teacher classifier-free guidance scale")
    runs: list[str] = option(help="NAME=RUN_DIR: that run's latest EMA in one step (a step folder works too); "
                                  "repeat for several", flag="--run", default_factory=list)
    two_step: list[str] = option(help="a --run NAME to evaluate in 2 steps as well", default_factory=list)
    raw: list[str] = option(help="a --run NAME whose trained weights are evaluated without the EMA as well "
                                 "(1 step; the run's checkpoint, not an export)", default_factory=list)
    real: bool = option(True, "the real-data reference rows (--no-real leaves them out)")
    refine_steps: int = option(0, "a reference row more: the real clips through latents refined in this many "
                                  "decoder steps (stage 2's data.refine_steps, at its default lr)")
    n: int = option(96, "prompts (held-out combinations)")
    seed: int = option(0, "prompt and noise seed")
    batch_size: int = option(16, "clips per generation call")
    grid_rows: int = option(4, "prompts shown in grid.png")
    decoder: str = option("vae", "latents to video: the full VAE, or the model folder's fast decoder "
                                 "(every row's clips, the VAE round trip's too)", choices=("vae", "fast"))
    fast_decoder: str = option("", "--decoder fast: a fast decoder folder other than the model folder's")
    out: str = option("outputs/eval", "folder for table.md, metrics.json and grid.png")
    threads: int = option(0, "torch threads; the numbers depend on it (float sums): 0 = this machine's share "
                             "of its cores, or OMP_NUM_THREADS")

    def validate(self):
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = this machine's share), got {self.threads}")
        if self.n < 2 or self.batch_size < 1 or self.teacher_steps < 0 or self.refine_steps < 0:
            raise ConfigError("n must be >= 2 (a Frechet distance needs two clips), batch_size >= 1, "
                              "teacher_steps >= 0, refine_steps >= 0")


def evaluate(cfg: EvaluateConfig) -> dict:
    import torch

    from apt.models.model_folder import resolve_model_dir
    from apt.toy.evaluation import comparison_grid, evaluate_models, markdown_table, model_specs, settings
    from apt.training.distributed import set_cpu_threads

    set_cpu_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model_dir = resolve_model_dir(cfg.model)
    specs = model_specs(cfg.teacher_steps, cfg.runs, cfg.two_step, real=cfg.real, guidance_scale=cfg.cfg,
                        raw=cfg.raw, refine_steps=cfg.refine_steps)
    results, videos, requests = evaluate_models(specs, model_dir, cfg.n, cfg.seed, cfg.batch_size,
                                                decoder=cfg.decoder, fast_decoder=cfg.fast_decoder)
    table = markdown_table(results)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table)
    report = {"settings": {**settings(cfg.n, cfg.seed, cfg.batch_size, model_dir), "decoder": cfg.decoder},
              "models": results}
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    comparison_grid(videos, requests, cfg.grid_rows).save(out / "grid.png")
    print(table)
    return report
