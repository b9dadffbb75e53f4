"""Process group, FSDP2 sharding and the small collectives the harness needs. PyTorch's own engine only.

Under torchrun: NCCL on GPU, gloo on CPU. As a plain `python` process: a world-of-one gloo group
(file:// rendezvous), so FSDP2 and DCP take the same code path in a laptop run as on a cluster.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from apt.config import ParallelConfig


# Our models' outputs (unpatchified velocities) are views; nothing in this project modifies a model
# output in place, which is the only case FSDP2 warns about.
warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")


_store_file: str | None = None  # the file:// rendezvous of a world of one


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str


def init_distributed() -> DistInfo:
    if dist.is_initialized():
        raise RuntimeError("the process group is already initialised")
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    else:
        local_rank = 0
        if cuda:
            torch.cuda.set_device(0)
        global _store_file
        fd, _store_file = tempfile.mkstemp(prefix="apt-pg-")
        os.close(fd)
        os.unlink(_store_file)  # the file store creates it; shutdown_distributed removes it
        dist.init_process_group(backend=backend, init_method=f"file://{_store_file}", rank=0, world_size=1)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def shutdown_distributed() -> None:
    """Barrier then destroy the group. Called from a `finally` while an exception is in flight, it
    skips the barrier: the other ranks may be waiting in a different collective and it would hang."""
    if dist.is_initialized():
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()
    global _store_file
    if _store_file is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_store_file)
        _store_file = None


def exit_cleanly(code: int = 0) -> None:
    """Skip interpreter teardown: gloo runs with DCP + full-state gathers abort at exit ~15% of
    the time after destroy_process_group (MACHINE-NOTES); os._exit stopped it in 32 of 32 runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fsdp_kwargs(cfg: ParallelConfig) -> dict:
    """fully_shard keyword arguments: precision (bf16 compute, fp32 reduction) and resharding."""
    kwargs = {"reshard_after_forward": bool(cfg.reshard_after_forward)}
    if cfg.mixed_precision == "bf16":
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return kwargs


def parallelize_backbone(backbone, cfg: ParallelConfig) -> None:
    """The per-model parallelize function for WanBackbone: activation checkpointing per block, then
    FSDP2 fully_shard per block and on the root, with a bf16 mixed-precision policy if asked.
    Frozen models (teacher, EMA) go through it too: sharding is what makes them fit at scale."""
    cfg.validate()
    # WanBackbone.run_block honours this flag (recompute each block in backward, non-reentrant).
    backbone.activation_checkpointing = bool(cfg.activation_checkpointing)
    if not cfg.fsdp:
        # FSDP2 is what reduces gradients across ranks; without it nothing would.
        if dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError("parallel.fsdp=false is only supported in a single process (nothing else syncs grads)")
        return
    kwargs = fsdp_kwargs(cfg)
    for block in backbone.blocks:
        fully_shard(block, **kwargs)
    fully_shard(backbone, **kwargs)
    # the discriminator enters through `features`, not forward: it must unshard the root params too
    register_fsdp_forward_method(backbone, "features")


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def reshard(module: torch.nn.Module) -> None:
    """Put FSDP2 params back to their sharded form (a root run under no_grad stays unsharded)."""
    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model. Works on plain modules and on FSDP2 modules sharded
    the same way: each rank lerps only its local shards, so no communication is needed."""
    # A root run under no_grad keeps its params unsharded (full tensors); lerp would then mix a full
    # tensor with a shard, so put both back to their sharded form first.
    reshard(ema)
    reshard(model)
    e_named, m_named = list(ema.named_parameters()), list(model.named_parameters())
    if [n for n, _ in e_named] != [n for n, _ in m_named]:
        raise ValueError("EMA and model have different parameter lists")
    e = [_local(p) for _, p in e_named]
    m = [_local(p).to(t.dtype) for (_, p), t in zip(m_named, e)]
    torch._foreach_lerp_(e, m, 1.0 - decay)


def all_reduce_mean(value, device=None):
    """Mean over ranks of a float, or of each float in a dict (one collective for all of them).
    For logging only: a local value on a world of one is returned as is."""
    if isinstance(value, dict):
        keys = sorted(value)
        return dict(zip(keys, _mean_over_ranks([float(value[k]) for k in keys], device)))
    return _mean_over_ranks([float(value)], device)[0]


def _mean_over_ranks(values: list[float], device) -> list[float]:
    if not values or not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    # float64 so that logged means do not depend on the reduction order's rounding
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()
