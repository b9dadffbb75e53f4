"""A LoRA run's adapter as a diffusers LoRA folder for the teacher folder's own pipeline:

    pipe = WanPipeline.from_pretrained(TEACHER_FOLDER)
    pipe.load_lora_weights(EXPORT)                    # pytorch_lora_weights.safetensors
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(EXPORT, subfolder="scheduler")
    video = pipe(prompt, num_inference_steps=1, guidance_scale=1.0, ...).frames[0]

    <out>/pytorch_lora_weights.safetensors   the adapter (diffusers' key names, rank/alpha metadata)
         scheduler/                          the one-step scheduler (apt/inference/export.py)
         seaweed_apt.json                    kind "lora", the teacher it applies to, how to call it, SHA-256s

Only an adapter trained on the teacher's own weights can be exported so (stage 1 with model.lora, or
stage 2 from the teacher or continuing such an adapter); one trained on top of full stage-1 weights needs
those too: export it merged (apt-export without --lora).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from apt.core.config import ConfigError
from apt.models.model_folder import MANIFEST, native_sample, read_manifest, verify_files

# Largest latent difference between the teacher pipeline with the LoRA file and the merged weights, fp32
# (the adapter beside the layer vs folded into it: rounding only; measured on the tiny model: 5e-7).
LORA_TOLERANCE = 1e-4


def export_lora(checkpoint: str | Path, out: str | Path, model_dir: str | Path | None = None,
                weights: str = "ema", dtype: str = "fp32", overwrite: bool = False) -> Path:
    from apt.inference.export import _text_tokens, check_export_target, one_step_scheduler, publish
    from apt.models.loading import parse_dtype
    from apt.models.lora import describe, save_lora_file
    from apt.models.model_folder import check_layout, resolve_model_dir
    from apt.training.lora_weights import TEACHER, checkpoint_lora
    from apt.training.run_folder import load_generator, model_dir_of, resolve_checkpoint, run_of

    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    step_dir = resolve_checkpoint(checkpoint, verify=True)
    record = checkpoint_lora(step_dir).get(weights)
    if not record:
        raise ConfigError(f"--lora: {step_dir}'s {weights!r} trained every weight, not a LoRA adapter: export it merged "
                         "(apt-export without --lora)")
    if record.get("base", TEACHER) != TEACHER:
        raise ConfigError(f"--lora: {step_dir}'s adapter applies to {record['base']}, not to the teacher folder, so a LoRA file "
                         "on the teacher would not reproduce it: export it merged (apt-export without --lora)")
    teacher = resolve_model_dir(model_dir) if model_dir is not None else model_dir_of(step_dir)
    if teacher is None:
        raise ValueError(f"no teacher folder recorded for {step_dir} (no run config.yaml): give --model")
    teacher = check_layout(teacher)
    check_export_target(out, protected={"the checkpoint's run": run_of(step_dir), "the model folder": teacher},
                        kind="lora")
    generator = load_generator(step_dir, teacher, weights, merge_lora=False)
    meta = json.loads((step_dir / "meta.json").read_text())
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_lora_file(generator.backbone, tmp, parse_dtype(dtype))
        one_step_scheduler().save_pretrained(tmp / "scheduler")
        size = native_sample(teacher)
        manifest = {
            "kind": "lora", "format": f"diffusers LoRA ({describe(record)}) for WanPipeline.load_lora_weights",
            "source_checkpoint": str(step_dir.resolve()), "step": meta.get("step"), "weights": weights,
            "dtype": dtype, "teacher": str(teacher.resolve()), "lora": {k: record[k] for k in ("rank", "alpha",
                                                                                               "targets")},
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sample": size,
            "recommended_call": {"num_inference_steps": 1, "guidance_scale": 1.0,
                                 "max_sequence_length": _text_tokens(teacher), "height": size["height"],
                                 "width": size["width"], "num_frames": size["frames"]},
            "notes": "Load the teacher folder's WanPipeline, then load_lora_weights(this folder) and this folder's "
                     "scheduler (one step, shift 1).",
        }
        publish(tmp, out, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def verify_lora_export(folder: str | Path, checkpoint: str | Path | None = None,
                       model_dir: str | Path | None = None, seed: int = 0, device: str = "cpu") -> dict:
    """The teacher's WanPipeline transformer with the exported LoRA file loaded (diffusers' own loader)
    against the checkpoint's generator with the adapter folded in: one-step latents on a small probe."""
    import torch
    from diffusers import WanPipeline

    from apt.core.sampling import initial_noise
    from apt.models.backbone import WanBackbone
    from apt.models.generator import OneStepGenerator
    from apt.models.loading import load_components
    from apt.training.run_folder import load_generator

    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("kind") != "lora":
        raise FileNotFoundError(f"{folder} is not a LoRA export (no {MANIFEST} of kind lora)")
    verify_files(folder)
    teacher = Path(model_dir or manifest["teacher"])
    pipe = WanPipeline.from_pretrained(teacher, torch_dtype=torch.float32)
    pipe.load_lora_weights(folder)
    with_file = WanBackbone(pipe.transformer)
    reference = load_generator(checkpoint or manifest["source_checkpoint"], teacher, manifest["weights"]).backbone
    text = load_components(teacher, parts=("text_encoder", "tokenizer")).text.encode(
        ["a red seven moving up and to the left", "a blue two moving right"]).to(device)
    p_t, p_h, p_w = reference.patch_size
    shape = (reference.config.in_channels, 2 * p_t, 4 * p_h, 4 * p_w)
    z = initial_noise(shape, [seed, seed + 1], device)
    ours, want = (OneStepGenerator(b.to(device)).sample(z, text).float().cpu() for b in (with_file, reference))
    diff = (ours - want).abs().max().item()
    return {"max_abs_diff_vs_merged": diff, "tolerance": LORA_TOLERANCE, "ok": diff <= LORA_TOLERANCE}
