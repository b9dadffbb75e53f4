"""Every collective of the project outside FSDP2's own: metrics, decisions and small objects across ranks.

The rule the helpers keep: a collective's tensors live on the process group's device, this rank's GPU
under NCCL and the CPU under gloo (`collective_device`), whatever device the caller's values are on.
With a process group they always communicate, a world of one included, so that a single-GPU run
meets the same device rules as a cluster. Without one they return the local values.
Tensor collectives are torch's functional ones: they return their result, which a test can record
and answer (tests/test_collectives.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def collective_device() -> torch.device:
    """The device a collective's tensors must be on: this rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    """The one tensor all-reduce: moved to the group's device, reduced, returned (float64 stays float64)."""
    return funcol.all_reduce(t.to(collective_device()), op, dist.group.WORLD)


def _as_float64(value, device: torch.device) -> torch.Tensor:
    if torch.is_tensor(value):
        return value.detach().to(device, torch.float64)
    return torch.tensor(float(value), dtype=torch.float64, device=device)


def mean_over_ranks(values: dict) -> dict[str, float]:
    """{key: mean over ranks} of floats or scalar tensors (on any device), as host floats, in one
    collective; keys sorted. float64 throughout, so that a mean does not depend on rounding order."""
    keys = sorted(values)
    if not keys:
        return {}
    device = collective_device() if is_distributed() else torch.device("cpu")
    local = torch.stack([_as_float64(values[k], device) for k in keys])
    if is_distributed():
        local = _all_reduce(local, "sum") / dist.get_world_size()
    return dict(zip(keys, local.tolist()))


def all_reduce_mean(value: float) -> float:
    """The mean over ranks of one float."""
    return mean_over_ranks({"value": value})["value"]


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a tensor (same shape everywhere), no gradient, back on t's device."""
    if not is_distributed():
        return t.detach().clone()
    return _all_reduce(t.detach(), "sum").to(t.device)


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is true on any."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=collective_device())
    return bool(_all_reduce(t, "max").item())


# Objects: torch pickles them into tensors on the group's device itself (it needs torch.cuda.set_device,
# which apt/training/distributed.py does); these helpers are the project's only callers.
def broadcast_object(obj, src: int = 0):
    """src's `obj` on every rank (as is without a process group)."""
    if not is_distributed():
        return obj
    shared = [obj]
    dist.broadcast_object_list(shared, src=src)
    return shared[0]


def all_gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_objects(obj, dst: int = 0) -> list | None:
    """Every rank's `obj`, in rank order, on rank dst; None on the others."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


# Context parallelism: the token sequence of one sample split over a group of ranks (Ulysses attention
# inside diffusers' blocks). Every rank of the group computes the same loss from the same replicated
# values, so each collective here has its exact adjoint as backward (a gather's is a reduce-scatter
# sum): every rank's gradient is then its share of (group size x the true gradient), and FSDP2's
# mean over all ranks gives the true gradient, for parameters before, inside and after the split alike.
def gather_along(t: torch.Tensor, dim: int, group: dist.ProcessGroup) -> torch.Tensor:
    """The group's shards of `t` concatenated along `dim`, in group rank order; differentiable."""
    return torch.cat(stack_over_group(t, group).unbind(0), dim)


def stack_over_group(t: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """(ranks, *t.shape): the group's `t`s (same shape everywhere) in group rank order; differentiable."""
    return funcol.all_gather_single_autograd(t.to(collective_device()).unsqueeze(0).contiguous(), 0, group)


def sum_over_group(t: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """The sum over the group's ranks of `t` (same shape everywhere); differentiable."""
    return stack_over_group(t, group).sum(0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
