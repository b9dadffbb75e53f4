"""Run apt-generate's `generate` under torchrun and save rank 0's latents and videos (for
tests/test_serving.py): python -m torch.distributed.run ... generate_worker.py OUT.pt -- <generate args>."""

import sys

import torch

from apt.cli.generate import generate

if __name__ == "__main__":
    out, argv = sys.argv[1], sys.argv[3:]
    result = generate(argv)
    if result is not None:
        torch.save({"latents": result.latents, "videos": result.videos, "report": result.report}, out)
