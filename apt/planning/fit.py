"""Does a training plan fit the GPUs' memory, and if not, the cheapest one that does.

A plan is apt/planning/estimate.py's Setup. The search keeps the model, the clip, the stage, the GPUs and
the global batch (the paper's choices, or the user's) and varies what costs no quality: context
parallelism (a divisor of the GPUs, the attention heads and the tokens), the micro-batch and activation
checkpointing; and, only where no plan of all weights fits, LoRA (a quality question: measured on the toy
in docs/scale.md). Cheapest = fewest seconds per update at a given MFU (checkpointing costs a recompute),
then the least context parallelism (its all-to-alls are not in the FLOPs), then the largest micro-batch.
"""

from __future__ import annotations

from dataclasses import replace

from apt.planning.estimate import Setup, estimate, latent_tokens, seconds_per_update

GIB = 2**30


def budget_bytes(gpu_memory_gib: float, headroom: float) -> float:
    """What a plan may use of a GPU: its memory less the headroom fraction (allocator fragmentation, the
    CUDA context and NCCL buffers live there too)."""
    return gpu_memory_gib * GIB * (1 - headroom)


def fits(result: dict, gpu_memory_gib: float, headroom: float) -> bool:
    return result["total_bytes"] <= budget_bytes(gpu_memory_gib, headroom)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidates(s: Setup, lora_rank: int = 0) -> list[Setup]:
    """Every plan of the same model, clip, stage, GPUs and global batch that the code can run; with
    lora_rank, also each of them training an adapter of that rank (where `s` trains all weights)."""
    heads, tokens = s.model["num_attention_heads"], latent_tokens(s)[1]
    batch = s.global_batch
    out = []
    ranks = [s.lora_rank] + ([lora_rank] if lora_rank and not s.lora_rank else [])
    for cp, rank in ((cp, rank) for cp in _divisors(s.gpus) for rank in ranks):
        if heads % cp or tokens % cp:
            continue
        groups = s.gpus // cp
        for mb in _divisors(max(1, batch // groups)):
            if batch % (mb * groups):
                continue
            for ac in (False, True):
                out.append(replace(s, context_parallel=cp, micro_batch=mb, batch=batch, activation_checkpointing=ac,
                                   lora_rank=rank))
    return out


def cheapest_fit(s: Setup, gpu_memory_gib: float, headroom: float = 0.1, mfu: float = 0.4,
                 lora_rank: int = 0) -> dict | None:
    """The estimate of the cheapest plan within the budget (training an adapter of lora_rank only where no
    plan of all weights fits), or None when none fits."""
    best, best_key = None, None
    for plan in candidates(s, lora_rank):
        r = estimate(plan)
        if not fits(r, gpu_memory_gib, headroom):
            continue
        added_lora = plan.lora_rank != s.lora_rank
        key = (added_lora, round(seconds_per_update(r, mfu), 6), plan.context_parallel, -plan.micro_batch)
        if best_key is None or key < best_key:
            best, best_key = r, key
    return best


def plan_flags(s: Setup) -> str:
    """The apt-estimate flags of a plan (and so the config keys: parallel.context_parallel,
    train.micro_batch_size, model.lora.rank, parallel.activation_checkpointing)."""
    flags = f"--cp {s.context_parallel} --micro-batch {s.micro_batch} --batch {s.global_batch}"
    flags += f" --lora {s.lora_rank}" if s.lora_rank else ""
    return flags + ("" if s.activation_checkpointing else " --no-activation-checkpointing")
