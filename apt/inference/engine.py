"""The generation engine behind apt-generate: load a teacher, a checkpoint's generator, an export or
an export's serving bundle; sample latents in batches; decode them; write the clips, a grid and a
report with seconds per phase. The command (its options) is apt/cli/generate.py."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from apt.core.config import ConfigError
from apt.inference.decoders import make_decoder, tile_grid

TEACHER_SAMPLING = dict(steps=25, guidance_scale=5.0)
ONE_STEP_SAMPLING = dict(steps=1, guidance_scale=1.0)
GENERATION_PHASES = ("text_encoder", "dit", "decode")


def read_prompts(cfg) -> list[str]:
    prompts = list(cfg.prompts)
    if cfg.prompts_file:
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise ConfigError(f"prompts_file {path} does not exist")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise ConfigError(f"prompts_file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        prompts += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ConfigError("give at least one --prompt or a --prompts-file with one prompt per line")
    return prompts


def load_bundle(cfg, device, dtype, world: int):
    """(BundleSampler, model folder, 'one-step', source) when the request is an export's traced serving
    bundle's (apt/inference/serving_bundle.py: one step, its size, the fast decoder, float32 on the CPU, one
    process); else None. Reads only JSON before deciding, and imports neither diffusers nor transformers."""
    import torch

    if not (cfg.serving_bundle in ("auto", "trust") and cfg.model and not cfg.checkpoint and cfg.decoder == "fast"
            and not cfg.fast_decoder and world == 1 and device.type == "cpu" and dtype == torch.float32
            and cfg.attention_backend == "native"):
        return None
    from apt.inference.serving_bundle import BundleSampler, UntrustedBundle, read_bundle_manifest, serves
    from apt.models.model_folder import is_one_step, resolve_model_dir

    model_dir = resolve_model_dir(cfg.model)
    manifest = read_bundle_manifest(model_dir) if is_one_step(model_dir) else None
    if manifest is None or not serves(manifest, sampling_params(cfg, model_dir, one_step=True)[0], device):
        return None
    try:
        sampler = BundleSampler(model_dir, trusted=cfg.serving_bundle == "trust")
    except UntrustedBundle as err:
        print(f"note: {err}; serving without it", file=sys.stderr)
        return None
    return sampler, model_dir, "one-step", f"export {model_dir} (serving bundle)"


def load_sampler(cfg, device, dtype, vae_dtype):
    """(sampler, the folder its VAE/text encoder come from, kind) for a teacher, a checkpoint or an export;
    kind is 'teacher' or 'one-step'."""
    from apt.inference.sampler import Sampler
    from apt.models.fast_decoder import FastDecoder, find_fast_decoder
    from apt.models.loading import load_components
    from apt.models.model_folder import check_layout, is_one_step, resolve_model_dir
    from apt.training.run_folder import load_generator, model_dir_of, resolve_checkpoint

    step_dir = resolve_checkpoint(cfg.checkpoint, verify=True) if cfg.checkpoint else None
    if cfg.model:
        model_dir = resolve_model_dir(cfg.model)
    elif step_dir is not None:
        model_dir = model_dir_of(step_dir)
        if model_dir is None:
            raise ConfigError(f"{step_dir} records no teacher folder (no run config.yaml): give --model")
    else:
        model_dir = resolve_model_dir("toy")
    try:
        check_layout(model_dir)
    except FileNotFoundError as err:
        raise ConfigError(f"{err} (set --model, or model: in the --config YAML)") from None
    # the fast decoder replaces the VAE: the VAE is then neither read nor imported
    decoder_part = ("vae",) if cfg.decoder == "vae" else ()
    fast_dir = find_fast_decoder(model_dir, cfg.fast_decoder) if cfg.decoder == "fast" else None
    if step_dir is not None:
        comps = load_components(model_dir, parts=(*decoder_part, "text_encoder", "tokenizer"), dtype=dtype,
                                vae_dtype=vae_dtype)
        # float32 first (DCP loads into tensors of the shards' dtype), then cast as an export reload is
        comps.transformer = load_generator(step_dir, model_dir, cfg.weights).backbone.cast(dtype)
        kind, source = "one-step", f"{cfg.weights} of {step_dir}"
    else:
        comps = load_components(model_dir, parts=("transformer", *decoder_part, "text_encoder", "tokenizer"),
                                dtype=dtype, vae_dtype=vae_dtype)
        kind = "one-step" if is_one_step(model_dir) else "teacher"
        source = f"export {model_dir}" if kind == "one-step" else f"teacher {model_dir}"
    if fast_dir is not None:
        comps.fast_decoder = FastDecoder.load(fast_dir, dtype=vae_dtype)
    if cfg.attention_backend != "native":  # native SDPA is diffusers' default already
        comps.transformer.set_attention_backend(cfg.attention_backend)
    comps.to(device)
    sampler = Sampler(comps, device, dtype, one_step=kind == "one-step", decoder=make_decoder(comps, cfg.decoder))
    return sampler, model_dir, kind, source


def sampling_params(cfg, model_dir: Path, one_step: bool):
    """(SamplingParams, the output size: height/width/frames/fps/upscale) from the flags and the model's defaults."""
    from apt.core.sampling import SamplingParams
    from apt.models.model_folder import native_sample

    size = {k: getattr(cfg, k) or v for k, v in native_sample(model_dir).items()}
    defaults = ONE_STEP_SAMPLING if one_step else TEACHER_SAMPLING
    steps, scale = cfg.steps or defaults["steps"], cfg.guidance_scale or defaults["guidance_scale"]
    if one_step and steps not in (1, 2):
        raise ConfigError(f"a one-step generator samples in 1 or 2 steps, got steps={steps}")
    if one_step and scale != 1.0:
        raise ConfigError("classifier-free guidance is distilled into a one-step generator: leave guidance_scale at 1")
    params = SamplingParams(height=size["height"], width=size["width"], frames=size["frames"], steps=steps,
                            guidance_scale=scale, negative_prompt=cfg.negative_prompt, shift=cfg.shift,
                            seed=cfg.seed, renoise_t=cfg.renoise_t)
    return params, size


def mode_name(kind: str, steps: int) -> str:
    """What ran, as reports and default output folders name it."""
    if kind == "teacher":
        return f"teacher-{steps}-step"
    return "one-step" if steps == 1 else "two-step"


def timing_table(seconds: dict[str, float], clips: int) -> str:
    rows = [(k, seconds.get(k, 0.0)) for k in GENERATION_PHASES]
    rows.append(("total", sum(s for _, s in rows)))
    rows += [(k, seconds[k]) for k in ("load", "write") if k in seconds]
    lines = [f"{'phase':<14}{'seconds':>10}{'per clip':>10}"]
    lines += [f"{name:<14}{s:>10.3f}{s / clips:>10.3f}" for name, s in rows]
    return "\n".join(lines)


def peak_memory(device) -> dict:
    import resource

    import torch

    out = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}  # KiB on Linux
    if device.type == "cuda":
        out["peak_cuda_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


@dataclass
class Result:
    report: dict
    videos: object  # (B, 3, F, H, W) in [-1, 1], on CPU
    latents: object  # (B, C, T, h, w) normalised, on CPU


def generate(cfg, keep_tensors: bool = True) -> Result | None:
    """apt-generate for a validated GenerateConfig (apt/cli/generate.py), returning the videos and latents
    too when keep_tensors (for tests and callers that keep them; the command streams: it holds one batch
    at a time). Under torchrun with several ranks the DiT runs context parallel and the VAE tiles are
    dealt to the ranks; rank 0 writes and returns the result, the others None."""
    prompts = read_prompts(cfg)
    if cfg.out.endswith(".mp4") and len(prompts) > 1:
        raise ConfigError(f"out {cfg.out} is one file but there are {len(prompts)} prompts; give a folder")
    import os

    from apt.training.distributed import init_distributed, set_cpu_threads, shutdown_distributed

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist_info = init_distributed()
        try:
            return _generate(cfg, prompts, dist_info, keep_tensors)
        finally:
            shutdown_distributed()
    set_cpu_threads()
    return _generate(cfg, prompts, None, keep_tensors)


def split_sequence(backbone, latent_shape, world: int, ring_degree: int = 1) -> None:
    """Context parallelism for the DiT over `world` ranks, with the user-facing checks first (the
    backbone refuses a ring degree that does not divide the ranks; apt-generate says so before loading)."""
    p_t, p_h, p_w = backbone.patch_size
    tokens = (latent_shape[1] // p_t) * (latent_shape[2] // p_h) * (latent_shape[3] // p_w)
    if tokens % world:
        raise ConfigError(f"context parallelism splits the {tokens} tokens of this size over {world} ranks: "
                          "they must divide evenly (change the size or the rank count)")
    try:
        backbone.enable_context_parallel(world // ring_degree, ring_degree)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def decode_latents(sampler, latents, batch_size: int, timer):
    """Videos (B, 3, F, H, W) on CPU, decoded in batches of batch_size (bounded memory) by the sampler's
    decoder; with a decoder that deals tiles to the ranks, rank 0 gets the videos, the others None."""
    import torch

    videos = []
    for i in range(0, len(latents), batch_size):
        with timer.phase("decode"):
            video = sampler.decode(latents[i : i + batch_size])
        if video is not None:
            videos.append(video.cpu())
    return torch.cat(videos) if videos else None


def _generate(cfg, prompts: list[str], dist_info, keep_tensors: bool) -> Result | None:
    import torch
    from tqdm import tqdm

    from apt.core.sampling import PhaseTimer
    from apt.inference.outputs import Outputs, default_out
    from apt.models.loading import parse_dtype  # light: diffusers comes with the models, not with this module

    rank, world = (dist_info.rank, dist_info.world_size) if dist_info else (0, 1)
    if dist_info is not None:
        if cfg.device:
            raise ConfigError("under torchrun each rank uses its own device (cuda:LOCAL_RANK, or the CPU): drop --device")
        device = dist_info.device
    else:
        device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {cfg.device}: this machine has no CUDA device (or this torch build none)")
    if world % cfg.ring_degree:  # before loading anything
        raise ConfigError(f"ring_degree {cfg.ring_degree} must divide the {world} ranks")
    default_dtype = "bf16" if device.type == "cuda" else "fp32"
    dtype = parse_dtype(cfg.dtype or default_dtype)
    vae_dtype = parse_dtype(cfg.vae_dtype or default_dtype)
    timer = PhaseTimer(synchronize=device.type == "cuda")
    with timer.phase("load"):
        loaded = load_bundle(cfg, device, dtype, world)
        sampler, model_dir, kind, source = loaded or load_sampler(cfg, device, dtype, vae_dtype)
    params, size = sampling_params(cfg, model_dir, one_step=kind == "one-step")
    try:
        shape = sampler.latent_shape(params)  # a size the VAE or the patch grid cannot make: one line, before sampling
    except ValueError as err:
        raise ConfigError(f"{err} (--height/--width/--frames)") from None
    tiles = tile_grid(cfg.vae_tiles, world) if cfg.decoder == "vae" else None
    if tiles and (tiles[0] > shape[2] or tiles[1] > shape[3]):
        raise ConfigError(f"a {tiles[0]}x{tiles[1]} VAE tile grid does not fit the {shape[2]}x{shape[3]} latent: "
                          "set --vae-tiles")
    if tiles:  # the VAE in tiles, dealt to the ranks
        sampler.decoder = make_decoder(sampler.c, "vae", tiles, cfg.vae_tile_overlap, rank, world)
    if world > 1:
        split_sequence(sampler.c.transformer, shape, world, cfg.ring_degree)
    mode = mode_name(kind, params.steps)
    source_path = Path(cfg.checkpoint).expanduser() if cfg.checkpoint else model_dir
    out = Outputs(Path(cfg.out).expanduser() if cfg.out else default_out(source_path, mode, cfg.decoder),
                  cfg.grid, cfg.report, size["fps"], size["upscale"])
    if rank == 0:
        out.claim()
    kept_latents, kept_videos = [], []
    report = {
        "status": "running", "mode": mode, "source": source, "model": str(model_dir), "device": str(device),
        "dtype": str(dtype).removeprefix("torch."), "attention_backend": cfg.attention_backend,
        "decoder": cfg.decoder, "decoder_dtype": str(vae_dtype).removeprefix("torch."),
        "ranks": world, "context_parallel": {"ulysses": world // cfg.ring_degree, "ring": cfg.ring_degree}
        if world > 1 else None, "vae_tiles": list(tiles) if tiles else None,
        "steps": params.steps, "guidance_scale": params.guidance_scale, "height": params.height,
        "width": params.width, "frames": params.frames, "fps": size["fps"], "seed": params.seed,
    }
    bar = tqdm(total=len(prompts), desc=mode, unit="clip", disable=rank != 0 or len(prompts) <= cfg.batch_size,
               dynamic_ncols=True)
    for start in range(0, len(prompts), cfg.batch_size):  # each batch written as soon as it is decoded
        chunk = prompts[start : start + cfg.batch_size]
        latents = sampler.generate(chunk, replace(params, seed=params.seed + start), timer, decode=False)
        with timer.phase("decode"):
            videos = sampler.decode(latents)
        if rank == 0:
            videos = videos.cpu()
            with timer.phase("write"):
                out.add(videos, chunk, start)
                out.write_report(report)
            if keep_tensors:
                kept_latents.append(latents.cpu())
                kept_videos.append(videos)
        bar.update(len(chunk))
    bar.close()
    if rank != 0:
        return None
    with timer.phase("write"):
        out.write_grid()
    seconds = {k: round(v, 3) for k, v in timer.seconds.items()}
    report.update(status="done", latent_shape=list(shape), video_shape=list(videos.shape[1:]), seconds=seconds,
                  seconds_per_clip_generation=round(sum(timer.seconds.get(k, 0.0) for k in GENERATION_PHASES)
                                                    / len(prompts), 3), **peak_memory(device))
    print(timing_table(timer.seconds, len(prompts)), file=sys.stderr)
    out.write_report(report)
    report = {**report, "videos": out.paths}
    if not keep_tensors:
        return Result(report, None, None)
    return Result(report, torch.cat(kept_videos), torch.cat(kept_latents))
