"""Per-GPU memory and FLOPs of a training step, by arithmetic over the real Wan configs built on the
meta device (no weights, no GPU): what fits before renting GPUs.

    apt-estimate --model wan2.1-1.3b --gpus 256 --micro-batch 1 --batch 2048 --frames 49 --height 720 --width 1280
    apt-estimate --model wan2.1-14b --gpus 1024 --batch 2048 --json
    apt-estimate --model wan2.1-14b --gpus 8 --batch 2048 --gpu-memory 80   # fits? if not, what does
    apt-estimate --check [--cp 2]   # also measure a tiny CPU run and compare it with the arithmetic
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from apt.core.command import console_script, run_command
from apt.core.config import ConfigError, option, parse_command
from apt.planning.estimate import WAN_MODELS, WAN_VAES, Setup, estimate, seconds_per_update
from apt.planning.fit import GIB, budget_bytes, cheapest_fit, fits, plan_flags
from apt.planning.report import format_table


@dataclass
class EstimateConfig:
    model: str = option("wan2.1-1.3b", "Wan config", choices=tuple(sorted(WAN_MODELS)))
    stage: str = option("apt", "apt (stage 2) or distill (stage 1)", choices=("apt", "distill"))
    gpus: int = option(64, "GPUs the step is sharded over")
    cp: int = option(1, "context parallelism: GPUs splitting each sample's tokens (parallel.context_parallel)")
    micro_batch: int = option(1, "samples per data-parallel group (GPUs / cp) per forward/backward")
    lora: int = option(0, "the generator trains a LoRA adapter of this rank on frozen weights (model.lora.rank)")
    batch: int = option(0, "global batch per update; 0 = micro-batch x GPUs / cp")
    frames: int = option(49, "clip frames")
    height: int = option(0, "clip height (0: the model's native, 720; 704 for wan2.2-ti2v-5b)")
    width: int = option(1280, "clip width")
    taps: str = option("", "comma-separated 1-based D taps; default 4/9, 13/18, 1 of depth")
    fp32: bool = option(False, "fp32 compute instead of bf16")
    activation_checkpointing: bool = option(True, "checkpoint every block (--no-activation-checkpointing)")
    mfu: float = option(0.4, "model FLOPs utilisation for the time estimate")
    reward_latent_frames: int = option(0, "stage 2 with reward feedback: latent frames decoded per sample (0 = none)")
    reward_window: bool = option(False, "the reward's latent frames are a window anywhere in the clip (adv.reward_window): "
                                        "count the decoder's warm-up over the frames before it")
    reward_params: float = option(0.0, "reward models' parameters in billions (whole on every GPU; CLIP L/14: 0.43)")
    reward_fp32: bool = option(False, "the reward models' weights in fp32 (default bf16, adv.rewards[*].dtype)")
    gpu_memory: float = option(0.0, "GiB per GPU (80 for an H100): say whether the plan fits, else propose one")
    headroom: float = option(0.1, "fraction of --gpu-memory a plan leaves free (allocator, CUDA context, NCCL)")
    updates: int = option(300, "generator updates of the run, for the days a plan takes (the paper's video stage: 300)")
    propose_lora: int = option(64, "LoRA rank a proposal may use where no plan of all weights fits (0: never)")
    json: bool = option(False, "print JSON instead of the table")
    check: bool = option(False, "also compare the arithmetic with a measured tiny CPU run")

    @property
    def clip_height(self) -> int:
        """--height, or the model's native height where it is 0."""
        return self.height or WAN_VAES[self.model][2][0]

    def validate(self):
        if self.model not in WAN_MODELS:
            raise ConfigError(f"model must be one of {', '.join(sorted(WAN_MODELS))}, got {self.model!r}")
        if self.stage not in ("apt", "distill"):
            raise ConfigError(f"stage must be apt or distill, got {self.stage!r}")
        if min(self.gpus, self.micro_batch, self.frames, self.width) < 1 or self.height < 0 or self.batch < 0:
            raise ConfigError("gpus, micro_batch, frames and width must be >= 1, height and batch >= 0")
        factors, _, native = WAN_VAES[self.model]
        _, p_h, p_w = WAN_MODELS[self.model]["patch_size"]
        for name, size, patch in (("height", self.clip_height, p_h), ("width", self.width, p_w)):
            if size % (factors["spatial"] * patch):  # a token covers spatial x patch pixels a side
                raise ConfigError(f"{name} {size} is not a multiple of {factors['spatial'] * patch} ({self.model}: "
                                  f"{factors['spatial']}x VAE, {p_h}x{p_w} patches); its native size is "
                                  f"{native[1]}x{native[0]}")
        if self.reward_latent_frames < 0 or self.reward_params < 0:
            raise ConfigError("reward_latent_frames and reward_params must be >= 0")
        if self.cp < 1 or self.gpu_memory < 0 or not 0 <= self.headroom < 1 or self.updates < 1:
            raise ConfigError("cp and updates must be >= 1, gpu_memory >= 0 and headroom in [0, 1)")
        if self.lora < 0 or self.propose_lora < 0:
            raise ConfigError("lora and propose_lora must be >= 0")
        if not 0 < self.mfu <= 1:
            raise ConfigError(f"mfu must be in (0, 1], got {self.mfu}")


def run(a: EstimateConfig) -> dict:
    try:
        taps = tuple(int(x) for x in a.taps.split(",")) if a.taps else None
    except ValueError:
        raise ConfigError(f"taps must be comma-separated integers, got {a.taps!r}") from None
    factors, vae_model, _ = WAN_VAES[a.model]
    setup = Setup(model=WAN_MODELS[a.model], stage=a.stage, gpus=a.gpus, micro_batch=a.micro_batch, batch=a.batch,
                  frames=a.frames, height=a.clip_height, width=a.width, vae=dict(factors), vae_model=vae_model,
                  compute_bytes=4 if a.fp32 else 2, taps=taps, activation_checkpointing=a.activation_checkpointing,
                  reward_latent_frames=a.reward_latent_frames, context_parallel=a.cp, reward_params=a.reward_params * 1e9,
                  reward_window=a.reward_window, reward_bytes=4 if a.reward_fp32 else 2, lora_rank=a.lora)
    try:
        r = estimate(setup)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    verdict = fit_verdict(r, a) if a.gpu_memory else None
    if a.json:
        out = {"model": a.model, "stage": a.stage, "gpus": a.gpus, "micro_batch": a.micro_batch, "batch": r["batch"],
               "grad_accum": r["grad_accum"], "latent": r["latent"], "tokens": r["tokens"],
               "params": {k: v for k, v in r["counts"].items() if k != "taps"}, "taps": list(r["counts"]["taps"]),
               "memory_bytes": r["memory"], "total_bytes": r["total_bytes"], "activations_bytes": r["activations"],
               "flops": r["flops"], "context_parallel": a.cp, "seconds_per_update": seconds_per_update(r, a.mfu)}
        if verdict is not None:
            out["fit"] = verdict
        print(json.dumps(out, indent=1))
    else:
        print(format_table(r, a.mfu, a.model))
        if verdict is not None:
            print("\n" + format_verdict(verdict, a))
    if a.check:
        from apt.planning.check import compare, compare_context_parallel

        if a.cp == 1:
            print("\ntiny CPU run (fp32, 6 blocks, 192 tokens): measured vs estimated")
            rows = compare()
        else:
            print(f"\ntiny CPU run (fp32, 6 blocks, 192 tokens, {a.cp} ranks splitting them): measured on rank 0 "
                  "vs estimated")
            rows = compare_context_parallel(a.cp)
        for name, got, want, ratio in rows:
            print(f"  {name:<16} {got:>14,.0f} {want:>14,.0f}  x{ratio:.3f}")
    return r | ({"fit": verdict} if verdict is not None else {})


def fit_verdict(r: dict, a: EstimateConfig) -> dict:
    """Whether the plan fits --gpu-memory less --headroom, and the cheapest plan that does."""
    best = cheapest_fit(r["setup"], a.gpu_memory, a.headroom, a.mfu, a.propose_lora)
    verdict = {"gpu_memory_gib": a.gpu_memory, "headroom": a.headroom, "fits": fits(r, a.gpu_memory, a.headroom),
               "total_gib": r["total_bytes"] / GIB, "budget_gib": budget_bytes(a.gpu_memory, a.headroom) / GIB,
               "proposal": None}
    if best is not None:
        seconds = seconds_per_update(best, a.mfu)
        verdict["proposal"] = {"flags": plan_flags(best["setup"]), "context_parallel": best["setup"].context_parallel,
                               "micro_batch": best["setup"].micro_batch, "lora_rank": best["setup"].lora_rank,
                               "activation_checkpointing": best["setup"].activation_checkpointing,
                               "total_gib": best["total_bytes"] / GIB, "seconds_per_update": seconds,
                               "days": seconds * a.updates / 86400, "updates": a.updates}
    return verdict


def format_verdict(v: dict, a: EstimateConfig) -> str:
    head = (f"fits {v['gpu_memory_gib']:g} GiB GPUs with {v['headroom']:.0%} headroom: "
            f"{'yes' if v['fits'] else 'NO'} ({v['total_gib']:.1f} of {v['budget_gib']:.1f} GiB)")
    p = v["proposal"]
    if p is None:
        return head + ("\n" if v["fits"] else "\nno plan fits these GPUs: more GPUs, a shorter clip or a lower "
                       "resolution (apt-estimate --frames/--height/--width)")
    return (head + f"\n{'cheapest plan' if v['fits'] else 'a plan that fits'}: {p['flags']}: {p['total_gib']:.1f} GiB, "
            f"{p['seconds_per_update']:.0f} s/update at {a.mfu:.0%} MFU, {p['days']:.1f} days for {p['updates']} updates")


def main(argv=None) -> dict:
    return run_command(lambda: run(parse_command(EstimateConfig, argv, __doc__, prog="apt-estimate")))


cli = console_script(main)
