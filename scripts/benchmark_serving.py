"""One-step serving against the 25-step CFG teacher: seconds per phase (text, DiT, decode, write) and
the ratios teacher / one-step end to end (text + DiT + decode, as the paper's Table 8 counts it; and
with the mp4 writing), DiT only and decode only, in one run, interleaved.

    OMP_NUM_THREADS=1 python scripts/benchmark_serving.py                      # toy, batch 1 and 16
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 scripts/benchmark_serving.py --batch 1
    OMP_NUM_THREADS=1 python scripts/benchmark_serving.py --whole-call --rounds 5   # whole apt-generate calls

Rows: the teacher (25 Euler steps, CFG 5, the full VAE), the one-step model with the full VAE
(--decoder vae) and with the fast decoder (--decoder fast). Every round runs each row once, in turn,
on the same prompts, so that the machine's load hits them alike; each row's phase seconds are the
median over rounds, each ratio the median over rounds of that round's ratio. Under torchrun with N
ranks the DiT runs context parallel (diffusers' Ulysses) and the VAE tiles are dealt to the ranks
(apt-generate's own code); rank 0 prints. --whole-call times whole `apt-generate` processes instead
(start-up and loading included) for the teacher, the one-step checkpoint and an export (with the
VAE, and with the fast decoder: the export's TorchScript serving bundle when it has one), in turn.

The one-step model: --one-step (a run, step or export folder); default outputs/quickstart/apt when
it exists, else the teacher's own weights in one step (the same network, the same time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_APT = ROOT / "outputs" / "quickstart" / "apt"
DEFAULT_EXPORT = ROOT / "exports" / "toy-apt"  # the README's apt-export line writes it
PHASES = ("text_encoder", "dit", "decode", "write")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="teacher folder (default: the shipped toy)")
    p.add_argument("--one-step", default="", help="one-step run, step or export folder (default: see above)")
    p.add_argument("--fast-decoder", default="", help="fast decoder folder (default: the model folder's)")
    p.add_argument("--export", default="", help="--whole-call: an export to serve from (default: exports/toy-apt "
                                                "when it exists)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="clips per call (default: 1 16)")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds after one warm-up round (default: 5)")
    p.add_argument("--teacher-steps", type=int, default=25, help="teacher sampling steps (default: 25)")
    p.add_argument("--no-fast", action="store_true", help="leave out the fast-decoder row")
    p.add_argument("--whole-call", action="store_true", help="time whole apt-generate processes (16 prompts)")
    p.add_argument("--prompts", type=int, default=16, help="--whole-call: prompts per call (default: 16)")
    p.add_argument("--height", type=int, default=0, help="clip height; 0 = the model's native size")
    p.add_argument("--width", type=int, default=0, help="clip width; 0 = the model's native size")
    p.add_argument("--frames", type=int, default=0, help="clip frames; 0 = the model's native length")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv)
    if min(args.batch) < 1 or args.rounds < 1 or args.teacher_steps < 1:
        p.error("--batch, --rounds and --teacher-steps must be >= 1")
    return args


def prompt_list(n: int) -> list[str]:
    import numpy as np

    from apt.toy.captions import random_captions

    captions, _ = random_captions(np.random.default_rng(0), n, image_fraction=0.0, split="test")
    return list(captions)


def one_step_source(args) -> str:
    if args.one_step:
        return args.one_step
    if QUICKSTART_APT.is_dir() and args.model == "toy":
        return str(QUICKSTART_APT)
    return ""


def median_ratio(rounds: list[dict], num: str, den: str, key) -> float:
    return statistics.median(key(r[num]) / max(key(r[den]), 1e-9) for r in rounds)


def in_process(args) -> dict:
    import torch

    from apt.core.sampling import PhaseTimer, SamplingParams
    from apt.inference.decoders import make_decoder, tile_grid
    from apt.inference.engine import decode_latents, split_sequence
    from apt.inference.outputs import write_videos
    from apt.inference.sampler import Sampler
    from apt.models.fast_decoder import FastDecoder, find_fast_decoder
    from apt.models.loading import Components, load_components
    from apt.models.model_folder import native_sample, resolve_model_dir
    from apt.training.distributed import init_distributed, set_cpu_threads, shutdown_distributed
    from apt.training.run_folder import load_generator

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist_info = init_distributed() if world > 1 else None
    if dist_info is None:
        set_cpu_threads()
    rank = dist_info.rank if dist_info else 0
    device = dist_info.device if dist_info else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        model_dir = resolve_model_dir(args.model)
        teacher = load_components(model_dir, dtype=dtype, vae_dtype=dtype)
        source = one_step_source(args)
        if source:
            backbone = load_generator(source, model_dir).backbone.cast(dtype)
        else:  # the same network in one step: the same time
            backbone = load_components(model_dir, parts=("transformer",), dtype=dtype).transformer
        fast = None
        if not args.no_fast:
            fast = FastDecoder.load(find_fast_decoder(model_dir, args.fast_decoder), dtype=dtype)
        one = Components(backbone, teacher.vae, teacher.text, fast).to(device)
        teacher.to(device)
        size = {k: getattr(args, k, 0) or v for k, v in native_sample(model_dir).items()}
        params = SamplingParams(height=size["height"], width=size["width"], frames=size["frames"])
        tiles = tile_grid("auto", world)
        vae = make_decoder(one, "vae", tiles, rank=rank, world=world)  # one tile per rank under torchrun
        rows = {
            f"teacher {args.teacher_steps}-step": (Sampler(teacher, device, dtype, decoder=vae),
                                                   dict(steps=args.teacher_steps, guidance_scale=5.0)),
            "one-step, VAE": (Sampler(one, device, dtype, one_step=True, decoder=vae), dict(steps=1, guidance_scale=1.0)),
        }
        if fast is not None:
            rows["one-step, fast decoder"] = (Sampler(one, device, dtype, one_step=True, decoder=make_decoder(one, "fast")),
                                              dict(steps=1, guidance_scale=1.0))
        shape = rows["one-step, VAE"][0].latent_shape(params)
        if world > 1:
            split_sequence(teacher.transformer, shape, world)
            split_sequence(backbone, shape, world)
        results = {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "ranks": world,
                   "torch_threads": torch.get_num_threads(), "one_step": source or "teacher weights",
                   "size": size, "rounds": args.rounds, "batches": {}}
        out_dir = Path(tempfile.mkdtemp(prefix="apt-bench-"))
        for batch in args.batch:
            prompts = prompt_list(batch)
            measured = []
            for round_ in range(args.rounds + 1):  # round 0 warms up
                seconds = {}
                for name, (sampler, sampling) in rows.items():
                    timer = PhaseTimer(synchronize=device.type == "cuda")
                    p = SamplingParams(**{**params.__dict__, **sampling})
                    latents = sampler.generate(prompts, p, timer, decode=False, batch_size=batch)
                    videos = decode_latents(sampler, latents, batch, timer)
                    if rank == 0:
                        with timer.phase("write"):
                            write_videos(videos, prompts, out_dir / f"r{round_}", size["fps"], size["upscale"])
                    seconds[name] = {k: timer.seconds.get(k, 0.0) for k in PHASES}
                if round_:
                    measured.append(seconds)
            results["batches"][batch] = summarise(measured, list(rows))
        return results if rank == 0 else {}
    finally:
        if dist_info is not None:
            shutdown_distributed()


def generation(s: dict) -> float:
    """End to end as the paper's Table 8 counts it: text encoder + DiT + decode (no file writing)."""
    return s["text_encoder"] + s["dit"] + s["decode"]


def summarise(rounds: list[dict], names: list[str]) -> dict:
    teacher = names[0]
    out = {"seconds": {n: {k: round(statistics.median(r[n][k] for r in rounds), 4) for k in PHASES} for n in names}}
    for n in names:
        out["seconds"][n]["generation"] = round(statistics.median(generation(r[n]) for r in rounds), 4)
    out["teacher_over"] = {
        n: {"end_to_end": round(median_ratio(rounds, teacher, n, generation), 2),
            "with_write": round(median_ratio(rounds, teacher, n, lambda s: sum(s.values())), 2),
            "dit": round(median_ratio(rounds, teacher, n, lambda s: s["dit"]), 2),
            "decode": round(median_ratio(rounds, teacher, n, lambda s: s["decode"]), 2)}
        for n in names[1:]}
    return out


def whole_calls(args) -> dict:
    """Whole apt-generate processes, start-up included: the teacher, the one-step checkpoint (diffusers
    path, VAE) and, given an export, the export with the VAE and with the fast decoder (its serving
    bundle when it has one)."""
    prompts = Path(tempfile.mkdtemp(prefix="apt-bench-")) / "prompts.txt"
    prompts.write_text("\n".join(prompt_list(args.prompts)) + "\n")
    calls = {"teacher": ["--model", args.model, "--steps", str(args.teacher_steps)]}
    source = one_step_source(args)
    if source:
        calls["one-step checkpoint, VAE"] = ["--checkpoint", source, "--model", args.model]
    export = args.export or (str(DEFAULT_EXPORT) if DEFAULT_EXPORT.is_dir() and args.model == "toy" else "")
    if export:
        calls["one-step export, VAE"] = ["--model", export]
        if not args.no_fast:
            bundled = (Path(export) / "serving" / "bundle.json").is_file()
            calls["one-step export, fast decoder" + (" (bundle)" if bundled else "")] = [
                "--model", export, "--decoder", "fast"]
    if len(calls) == 1:
        raise SystemExit("--whole-call needs a one-step model: --one-step RUN and/or --export FOLDER")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    rounds = []
    for round_ in range(args.rounds + 1):
        seconds = {}
        for i, (name, call) in enumerate(calls.items()):
            cmd = [sys.executable, str(ROOT / "scripts" / "generate.py"), *call, "--prompts-file", str(prompts),
                   "--batch-size", str(args.prompts), "--out", str(prompts.parent / f"call{i}-round{round_}")]
            tick = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            seconds[name] = time.perf_counter() - tick
            if proc.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        if round_:  # round 0 warms the file cache
            rounds.append(seconds)
    names = list(calls)
    return {"prompts": args.prompts, "rounds": args.rounds, "one_step": source, "export": export,
            "seconds": {n: round(statistics.median(r[n] for r in rounds), 3) for n in names},
            "teacher_over": {n: round(statistics.median(r["teacher"] / r[n] for r in rounds), 2) for n in names[1:]}}


def print_table(results: dict) -> None:
    if "batches" not in results:
        print(f"whole apt-generate calls, {results['prompts']} prompts, median of {results['rounds']} rounds")
        for name, s in results["seconds"].items():
            ratio = results["teacher_over"].get(name)
            print(f"  {name:<26}{s:>9.2f} s" + (f"   teacher / this {ratio:.2f}x" if ratio else ""))
        return
    print(f"{results['device']} {results['dtype']}, {results['ranks']} rank(s), {results['torch_threads']} "
          f"thread(s), one-step weights: {results['one_step']}, median of {results['rounds']} rounds")
    for batch, r in results["batches"].items():
        print(f"\nbatch {batch}: seconds per call")
        print(f"  {'':<26}" + "".join(f"{k:>13}" for k in (*PHASES, "generation")))
        for name, s in r["seconds"].items():
            print(f"  {name:<26}" + "".join(f"{s[k]:>13.4f}" for k in (*PHASES, "generation")))
        for name, ratio in r["teacher_over"].items():
            print(f"  teacher / {name}: end to end (text+DiT+decode) {ratio['end_to_end']:.1f}x, with writing "
                  f"{ratio['with_write']:.1f}x, DiT {ratio['dit']:.1f}x, decode {ratio['decode']:.1f}x")


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = whole_calls(args) if args.whole_call else in_process(args)
    if results:
        print_table(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        os._exit(0)  # see apt.core.command.exit_cleanly
