"""Export a training checkpoint as a diffusers-format folder that WanPipeline serves in one step.

    apt-export --checkpoint outputs/quickstart/apt --out exports/toy-apt --verify
    apt-export --checkpoint runs/wan2.1-14b-apt-video/checkpoints/step_00000300 \\
        --model /data/Wan2.1-T2V-14B-Diffusers --dtype bf16 --out exports/wan14b-apt --verify
    apt-export --checkpoint runs/wan-lora --lora --out exports/wan-lora --verify   # a LoRA run's adapter alone

--verify reloads the folder and compares its one-step latents with the checkpoint's for fixed seeds
(exactly equal in the export's dtype; bf16 also within a stated tolerance of the float32 checkpoint);
the exit status is 1 if they differ.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from apt.core.command import console_script, run_command
from apt.core.config import ConfigError, option, parse_command
from apt.inference.export import BF16_TOLERANCE


@dataclass
class ExportConfig:
    checkpoint: str = option("", "training run or step folder (required)")
    out: str = option("", "folder to write (required; must not exist unless --overwrite)")
    model: str = option("", "teacher folder the run started from; default: the run's config.yaml")
    weights: str = option("ema", "which model of the checkpoint", choices=("ema", "generator", "student"))
    dtype: str = option("bf16", "dtype of the exported transformer", choices=("bf16", "fp32"))
    overwrite: bool = option(False, "replace an existing --out")
    verify: bool = option(False, "reload the export and compare with the checkpoint")
    serving_bundle: bool = option(False, "also trace the one-step path (text encoder, generator, fast decoder) "
                                         "for CPU serving without diffusers (needs the teacher's fast_decoder/; "
                                         "traced on the CPU in float32: for small models like the toy)")
    lora: bool = option(False, "a LoRA run (model.lora) trained on the teacher: write its adapter as a diffusers "
                               "LoRA file for the teacher folder's WanPipeline.load_lora_weights, not merged weights")
    verify_device: str = option("cpu", "device of the --verify comparison")
    bf16_tolerance: float = option(BF16_TOLERANCE, "largest latent difference a bf16 export may show against fp32")

    def validate(self):
        if not self.checkpoint or not self.out:
            raise ConfigError("give --checkpoint (a run or step folder) and --out (the folder to write)")


def export(cfg: ExportConfig) -> int:
    from apt.inference.export import export_checkpoint, verify_export
    from apt.inference.lora_export import export_lora, verify_lora_export

    if cfg.lora and cfg.serving_bundle:
        raise ConfigError("--serving-bundle traces merged weights: drop --lora")
    if cfg.lora:
        out = export_lora(cfg.checkpoint, cfg.out, cfg.model or None, cfg.weights, cfg.dtype, cfg.overwrite)
    else:
        out = export_checkpoint(cfg.checkpoint, cfg.out, cfg.model or None, cfg.weights, cfg.dtype, cfg.overwrite,
                                serving_bundle=cfg.serving_bundle)
    report = {"export": str(out)}
    if cfg.verify and cfg.lora:
        report["verify"] = verify_lora_export(out, cfg.checkpoint, cfg.model or None, device=cfg.verify_device)
    elif cfg.verify:
        report["verify"] = verify_export(out, cfg.checkpoint, cfg.model or None, device=cfg.verify_device,
                                         bf16_tolerance=cfg.bf16_tolerance)
    print(json.dumps(report, indent=2))
    if cfg.verify and not report["verify"]["ok"]:
        print("error: the export's output differs from the checkpoint's", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return run_command(lambda: export(parse_command(ExportConfig, argv, __doc__, prog="apt-export")))


cli = console_script(main)
