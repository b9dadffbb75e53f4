"""Process group and FSDP2 sharding: the per-model parallelize function. PyTorch's own engine only
(the collectives outside FSDP2 are apt/core/collectives.py).

Under torchrun: NCCL on GPU, gloo on CPU. As a plain `python` process: a world-of-one gloo group
(file:// rendezvous), so FSDP2 and DCP take the same code path in a laptop run as on a cluster.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from apt.core.collectives import all_gather_objects, barrier
from apt.core.config import ConfigError
from apt.training.config import ParallelConfig

_store_file: str | None = None  # the file:// rendezvous of a world of one


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    # ranks per context-parallel group (they split one sample's tokens and share its data and noise);
    # consecutive ranks form a group, so a group stays inside a node where it can
    context_parallel: int = 1

    @property
    def dp_rank(self) -> int:
        """This rank's data-parallel group: what picks its samples and seeds its noise."""
        return self.rank // self.context_parallel

    @property
    def dp_size(self) -> int:
        """Data-parallel groups: the ranks that see different samples."""
        return self.world_size // self.context_parallel


_mesh = None  # the (dp, ring, ulysses) DeviceMesh of a context-parallel run (init_distributed)


def context_parallel_mesh():
    """The run's DeviceMesh ("dp", "ring", "ulysses"), or None when tokens are not split."""
    return _mesh


def set_cpu_threads() -> int:
    """Threads for this process's CPU math: OMP_NUM_THREADS when set (torch has applied it); otherwise
    the cores this process may run on (its affinity mask, which containers and taskset narrow; torch
    counts the machine's cores) shared among the ranks on this machine (LOCAL_WORLD_SIZE). Without it
    N processes on one machine each use every core, and batch-1 sampling slows several-fold on a busy
    machine. Returns the count."""
    if not os.environ.get("OMP_NUM_THREADS"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))
    return torch.get_num_threads()


def die_with_parent() -> None:
    """Under torchrun, end this worker when its launcher dies (Linux: PR_SET_PDEATHSIG): killing only the
    torchrun process would otherwise leave the workers training on, holding the GPUs and the run folder."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the launcher died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def init_distributed(context_parallel: int = 1) -> DistInfo:
    """The process group (see the module's doc); with context_parallel > 1 also the device mesh that
    groups each `context_parallel` consecutive ranks to split one sample's tokens."""
    if dist.is_initialized():
        raise RuntimeError("the process group is already initialised")
    set_cpu_threads()
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun
        die_with_parent()
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
    info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend, context_parallel)
    if context_parallel > 1:
        if info.world_size % context_parallel:
            shutdown_distributed()
            raise ConfigError(f"parallel.context_parallel={context_parallel} must divide the {info.world_size} ranks "
                              "(launch with torchrun --nproc_per_node, a multiple of it)")
        from torch.distributed.device_mesh import init_device_mesh

        global _mesh
        _mesh = init_device_mesh(device.type, (info.dp_size, 1, context_parallel),
                                 mesh_dim_names=("dp", "ring", "ulysses"))
    return info


def shutdown_distributed() -> None:
    """Barrier then destroy the group. Called from a `finally` while an exception is in flight, it
    skips the barrier: the other ranks may be waiting in a different collective and it would hang."""
    global _mesh, _store_file
    _mesh = None
    if dist.is_initialized():
        if sys.exc_info()[0] is None:
            barrier()
        dist.destroy_process_group()
    if _store_file is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_store_file)
        _store_file = None


def context_parallel_divergence(info: DistInfo) -> list[int]:
    """The data-parallel groups whose ranks' random generators differ (collective; [] when all agree).
    A context-parallel group's ranks each take a slice of what they assume is one sample noised alike:
    a draw on some ranks only would silently mix different samples' tokens from then on."""
    state = [torch.get_rng_state()] + ([torch.cuda.get_rng_state()] if torch.cuda.is_available() else [])
    fingerprint = hashlib.sha256(b"".join(s.numpy().tobytes() for s in state)).hexdigest()
    groups: dict[int, set[str]] = {}
    for dp_rank, value in all_gather_objects((info.dp_rank, fingerprint)):
        groups.setdefault(dp_rank, set()).add(value)
    return sorted(g for g, values in groups.items() if len(values) > 1)


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
    if cfg.context_parallel > 1:
        mesh = context_parallel_mesh()
        if mesh is None or mesh["ulysses"].size() != cfg.context_parallel:
            raise RuntimeError(f"parallel.context_parallel={cfg.context_parallel} needs the process group made by "
                               "init_distributed(context_parallel=...) with the same degree")
        try:
            backbone.enable_context_parallel(cfg.context_parallel, 1, mesh)
        except ValueError as err:
            raise ConfigError(f"parallel.context_parallel={cfg.context_parallel}: {err}") from None
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


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor parameter; a plain tensor as is."""
    return t.to_local() if hasattr(t, "to_local") else t


def reshard(module: torch.nn.Module) -> None:
    """Put FSDP2 params back to their sharded form (a root run under no_grad stays unsharded)."""
    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def grad_norm(parameters, max_norm: float = 0.0) -> torch.Tensor:
    """Total L2 norm of the parameters' gradients (sharded DTensors included), a scalar on their device
    (no host sync); with max_norm > 0 the gradients are also clipped to it. The one grad-norm helper of
    every stage."""
    params = [p for p in parameters if p.grad is not None]
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
