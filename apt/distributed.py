"""Process group, FSDP2 sharding and the small collectives the harness needs. PyTorch's own engine only.

Under torchrun: NCCL on GPU, gloo on CPU. As a plain `python` process: a world-of-one gloo group
(file:// rendezvous), so FSDP2 and DCP take the same code path in a laptop run as on a cluster.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method


# Our models' outputs (unpatchified velocities) are views; nothing in this project modifies a model
# output in place, which is the only case FSDP2 warns about.
warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")


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
        fd, path = tempfile.mkstemp(prefix="apt-pg-")
        os.close(fd)
        os.unlink(path)  # the file store creates it
        dist.init_process_group(backend=backend, init_method=f"file://{path}", rank=0, world_size=1)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_cleanly(code: int = 0) -> None:
    """Skip interpreter teardown: gloo runs with DCP + full-state gathers abort at exit ~15% of
    the time after destroy_process_group (MACHINE-NOTES); os._exit stopped it in 32 of 32 runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def parallelize_backbone(backbone, cfg) -> None:
    """The per-model parallelize function for WanBackbone: activation checkpointing per block, then
    FSDP2 fully_shard per block and on the root, with a bf16 mixed-precision policy if asked."""
    backbone.activation_checkpointing = bool(cfg.activation_checkpointing)
    if not cfg.fsdp:
        if dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError("parallel.fsdp=false is only supported in a single process (nothing else syncs grads)")
        if cfg.mixed_precision == "bf16":
            backbone.to(torch.bfloat16)
        return
    mp = None
    if cfg.mixed_precision == "bf16":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    kwargs = {"mp_policy": mp} if mp is not None else {}
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
    """ema <- decay * ema + (1 - decay) * model, shard by shard (both sharded the same way)."""
    reshard(ema)
    reshard(model)
    e = [_local(p) for p in ema.parameters()]
    m = [_local(p).to(e[0].dtype) for p in model.parameters()]
    if len(e) != len(m):
        raise ValueError("EMA and model have different parameter lists")
    torch._foreach_lerp_(e, m, 1.0 - decay)


@torch.no_grad()
def copy_params(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    for d, s in zip(dst.parameters(), src.parameters()):
        _local(d).copy_(_local(s))


def all_reduce_mean(values: dict[str, float], device=None) -> dict[str, float]:
    """Mean of each scalar over ranks (for logging)."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))
