"""One context-parallel forward and backward against the whole sequence, in the same processes.

    torchrun --nproc_per_node RANKS tests/context_parallel_worker.py CONTEXT_PARALLEL REPORT.json

Every rank builds the same tiny generator and discriminator twice: plain copies that see the whole token
sequence, and copies split over context-parallel groups and FSDP2-sharded over all ranks. Each
data-parallel group gets its own samples. The loss (generator output, discriminator logits through the
token heads, feature matching) is computed both ways; the split copies' gradients (FSDP2's mean over
ranks) are compared with the plain copies' gradients averaged over the data-parallel groups.
"""

from __future__ import annotations

import copy
import json
import sys

import torch
from tiny import tiny_transformer

from apt.adversarial import losses
from apt.core.collectives import all_gather_objects
from apt.models.backbone import WanBackbone
from apt.training.config import ParallelConfig
from apt.training.distributed import init_distributed, parallelize_backbone, shutdown_distributed
from discriminator.model import Discriminator
from discriminator.parallel import parallelize_discriminator


def loss_of(generator, discriminator, batch, group=None):
    x, t, text, noise = batch
    out = generator(x, t, text)
    logits, feats = discriminator(out, text, t=t, noise=noise, return_features=True)
    matching = losses.feature_matching([f.detach() * 0.5 for f in feats], feats, group)
    return out.square().mean() + torch.nn.functional.softplus(logits).mean() + matching


def main(context_parallel: int, report: str) -> None:
    info = init_distributed(context_parallel)
    torch.manual_seed(0)
    layout = dict(num_attention_heads=4, attention_head_dim=8)
    generator = WanBackbone(tiny_transformer(0, **layout)).train()
    discriminator = Discriminator.from_teacher(WanBackbone(tiny_transformer(1, **layout)), taps=(2, 4))
    plain_g, plain_d = copy.deepcopy(generator), copy.deepcopy(discriminator)
    cfg = ParallelConfig(context_parallel=context_parallel, activation_checkpointing=True)
    parallelize_backbone(generator, cfg)
    parallelize_discriminator(discriminator, cfg)

    g = torch.Generator().manual_seed(100 + info.dp_rank)  # a data-parallel group's own samples
    batch = (torch.randn(2, 4, 2, 8, 8, generator=g), torch.rand(2, generator=g), torch.randn(2, 6, 16, generator=g),
             torch.randn(2, 4, 2, 8, 8, generator=g))
    split_loss = loss_of(generator, discriminator, batch, discriminator.backbone.context_parallel_group)
    split_loss.backward()
    whole_loss = loss_of(plain_g, plain_d, batch)
    whole_loss.backward()

    worst, count = 0.0, 0
    for split, whole in ((generator, plain_g), (discriminator, plain_d)):
        for (name, p), (_, q) in zip(split.named_parameters(), whole.named_parameters()):
            if q.grad is None:
                continue
            got = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            want = q.grad.clone()
            torch.distributed.all_reduce(want)  # the plain copies' mean over the ranks = over the groups
            want /= info.world_size
            worst = max(worst, ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item())
            count += 1
    loss_rel = abs(split_loss.item() - whole_loss.item()) / abs(whole_loss.item())
    ranks = all_gather_objects((loss_rel, worst))  # the worst over ranks
    if info.rank == 0:
        with open(report, "w") as f:
            json.dump({"parameters": count, "loss_rel": max(r[0] for r in ranks), "grad_rel": max(r[1] for r in ranks)},
                      f)
    shutdown_distributed()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
