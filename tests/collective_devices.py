"""Run one training command with every collective the project calls recorded, as if the process group
lived on another device than the CPU (a GPU under NCCL): tests/test_collectives.py.

    torchrun --nproc_per_node 2 --standalone tests/collective_devices.py OUT MODULE [command args ...]

The process group is gloo on the CPU; `apt.core.collectives.collective_device` is made to answer "meta"
(standing in for this rank's GPU). A tensor collective called from the project's own code (not from
torch's, as FSDP2's are) must get its tensors on that device: each call is recorded with the tensors'
devices and answered with zeros of the right shape (functional collectives) or left as it is. A CPU
tensor there is what NCCL refuses ("No backend type associated with device type cpu"). Each rank writes
OUT/rank<r>.json: [{"op", "caller", "via", "devices"}].
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol

GROUP_DEVICE = torch.device("meta")
TORCH_DIR = str(Path(torch.__file__).parent)
TENSOR_OPS = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor", "reduce",
              "gather", "scatter", "all_to_all_single")
FUNCTIONAL_OPS = ("all_reduce", "all_gather_tensor", "reduce_scatter_tensor", "all_to_all_single")
calls: list[dict] = []


def _tensors(args, kwargs) -> list[torch.Tensor]:
    found = []
    for value in [*args, *kwargs.values()]:
        if torch.is_tensor(value):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found += [v for v in value if torch.is_tensor(v)]
    return found


def _callers() -> list[str] | None:
    """file:function of whoever called the collective and of the project's frames above it (the
    innermost first), or None when the caller is torch itself (FSDP2 etc.)."""
    frame = sys._getframe(2)
    if frame.f_code.co_filename.startswith(TORCH_DIR):
        return None
    chain = []
    while frame is not None and len(chain) < 6:
        if not frame.f_code.co_filename.startswith(TORCH_DIR):
            chain.append(f"{os.path.relpath(frame.f_code.co_filename)}:{frame.f_code.co_name}")
        frame = frame.f_back
    return chain


def recorded(name: str, real, functional: bool):
    def call(*args, **kwargs):
        callers = _callers()
        if callers is None:
            return real(*args, **kwargs)
        tensors = _tensors(args, kwargs)
        calls.append({"op": name, "caller": callers[0], "via": callers[1:], "devices": [str(t.device) for t in tensors]})
        if any(t.device.type == "meta" for t in tensors):  # on the pretended GPU: answered, not communicated
            return torch.zeros(tensors[0].shape, dtype=tensors[0].dtype) if functional else None
        return real(*args, **kwargs)
    return call


def main(out: str, module: str, argv: list[str]) -> None:
    import apt.core.collectives as collectives

    collectives.collective_device = lambda: GROUP_DEVICE
    for name in TENSOR_OPS:
        setattr(dist, name, recorded(name, getattr(dist, name), functional=False))
    for name in FUNCTIONAL_OPS:
        setattr(funcol, name, recorded(f"functional {name}", getattr(funcol, name), functional=True))
    rank = int(os.environ.get("RANK", "0"))
    try:
        importlib.import_module(module).main(argv)
    finally:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(calls, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
    os._exit(0)  # skip teardown (the rare gloo abort at exit after DCP)
