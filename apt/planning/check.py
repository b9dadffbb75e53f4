"""Check apt/planning/estimate.py's arithmetic against a measured tiny run on CPU.

Measured exactly: parameter, gradient and optimiser-state bytes (stage 2's Adam with beta1 0) of a real G, D and EMA after one
update; the activations each phase of a stage-2 step keeps for backward (the unique storages that
autograd saves, caught by saved_tensors_hooks, parameters excluded) with activation checkpointing on;
one block's full activations (what the backward recomputes at a time); and matmul/attention FLOPs of
one forward (torch.utils.flop_counter). Then the same quantities from the estimator for that config.
"""

from __future__ import annotations

import copy

import torch
from torch.distributed._functional_collectives import AsyncCollectiveTensor

from apt.planning.estimate import Setup, activation_bytes, latent_tokens, param_counts
from apt.training.flops import forward_flops

TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
            text_dim=16, freq_dim=16, ffn_dim=96, num_layers=6, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64)
TINY_SETUP = dict(frames=9, height=64, width=64, text_tokens=32, vae=dict(spatial=4, temporal=4),
                  compute_bytes=4, master_bytes=4, taps=(3, 4, 6))


class SavedBytes:
    """Sum of unique storages autograd saves inside the context, excluding parameters."""

    def __init__(self, params):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.seen: dict[int, int] = {}

    def _pack(self, t):
        if isinstance(t, AsyncCollectiveTensor):  # a functional collective's result (context parallelism)
            t = t.trigger_wait()
        s = t.untyped_storage()
        if s.data_ptr() not in self.skip and s.device.type != "meta":
            self.seen.setdefault(s.data_ptr(), s.nbytes())
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def measure(model_cfg: dict = TINY, setup: dict = TINY_SETUP, seed: int = 0, context_parallel: int = 1) -> dict:
    """The quantities on this process; with context_parallel > 1, this rank's under a process group of
    that many ranks splitting the tokens (init_distributed(context_parallel) first; no FSDP, so that
    parameters stay the module's own tensors)."""
    from diffusers import WanTransformer3DModel

    from apt.adversarial import losses
    from apt.core import flow
    from apt.models.backbone import WanBackbone
    from apt.models.generator import OneStepGenerator
    from discriminator.model import Discriminator

    torch.manual_seed(seed)
    s = Setup(model=model_cfg, **setup)
    (c, t, h, w), n = latent_tokens(s)
    teacher = WanBackbone(WanTransformer3DModel(**model_cfg))
    g = OneStepGenerator(WanBackbone(copy.deepcopy(teacher.model)).train())
    ema = copy.deepcopy(g).requires_grad_(False)
    d = Discriminator.from_teacher(teacher, taps=s.taps)
    if context_parallel > 1:
        from apt.training.distributed import context_parallel_mesh

        for backbone in (g.backbone, d.backbone):
            backbone.enable_context_parallel(context_parallel, 1, context_parallel_mesh())
    g.backbone.activation_checkpointing = d.backbone.activation_checkpointing = True
    params = list(g.parameters()) + list(d.parameters())
    x, z = torch.randn(1, c, t, h, w), torch.randn(1, c, t, h, w)
    text = torch.randn(1, s.text_tokens, model_cfg["text_dim"])
    tt, noise = flow.sample_timesteps(1, 12.0), torch.randn_like(x)

    with SavedBytes(params) as g_step:  # G forward, D on the fakes (apt/adversarial.py's G update)
        loss_g = losses.g_loss(d(g(z, text), text, shift_s=12.0))
    with torch.no_grad():
        fake = g(z, text)
    # The D update backpropagates its fake half on its own first; the peak is the real half: the clean
    # and the sigma-perturbed real passes (apt/adversarial.py).
    with SavedBytes(params) as d_step:
        real = d(x, text, t=tt, noise=noise)
        loss_d = losses.d_loss_real(real) + 100 * losses.approximate_r1(
            real, d(losses.perturb(x, 0.01), text, t=tt, noise=noise))
    loss_d = loss_d + losses.d_loss_fake(d(fake, text))
    emb = g.backbone.embed(x, torch.ones(1), text)
    tokens = emb.tokens.detach().requires_grad_(True)
    g.backbone.activation_checkpointing = False
    with SavedBytes(params) as block:
        g.backbone.run_block(0, tokens, emb)

    (loss_g + loss_d).backward()
    from apt.adversarial.stage import make_optimizer

    opt_g = make_optimizer("adam", g.parameters(), 1e-6, 0.9)
    opt_d = make_optimizer("adam", [p for p in d.parameters() if p.requires_grad], 1e-6, 0.9)
    opt_g.step()
    opt_d.step()

    def nbytes(tensors):
        return sum(x.numel() * x.element_size() for x in tensors)

    def opt_bytes(opt):
        return sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
                   if torch.is_tensor(v) and v.ndim > 0)

    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    # the flop counter knows the CUDA attention kernels; teach it the CPU one (same arithmetic)
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                lambda q, k, v, *args, out_shape=None, **kw: sdpa_flop_count(q, k, v)}
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:  # (under no_grad its module tracker trips on D)
        g.backbone(x, torch.ones(1), text)
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as d_counter:
        d.logits_at(x, torch.ones(1), text)
    return {
        "g_params": nbytes(g.parameters()), "ema_params": nbytes(ema.parameters()),
        "d_params": nbytes(d.parameters()), "g_grads": nbytes(p.grad for p in g.parameters()),
        "d_grads": nbytes(p.grad for p in d.parameters() if p.grad is not None),
        "g_optimizer": opt_bytes(opt_g), "d_optimizer": opt_bytes(opt_d),
        "act_g_step": g_step.total, "act_d_step": d_step.total, "act_block": block.total,
        "g_forward_flops": counter.get_total_flops(), "d_forward_flops": d_counter.get_total_flops(),
        "tokens": n,
    }


def predict(model_cfg: dict = TINY, setup: dict = TINY_SETUP, context_parallel: int = 1) -> dict:
    """The estimator's figures for `measure`'s run (FLOPs per rank: the whole forward's / context_parallel)."""
    s = Setup(model=model_cfg, **setup, gpus=context_parallel, context_parallel=context_parallel)
    cnt = param_counts(model_cfg, s.taps, s.head_mlp_ratio)
    acts = activation_bytes(s, cnt)
    _, n = latent_tokens(s)
    rec = acts["recompute_block"]
    return {
        "g_params": 4 * cnt["total"], "ema_params": 4 * cnt["total"], "d_params": 4 * cnt["d_total"],
        "g_grads": 4 * cnt["total"], "d_grads": 4 * cnt["d_trainable"],
        "g_optimizer": 2 * 4 * cnt["total"], "d_optimizer": 2 * 4 * cnt["d_trainable"],
        "act_g_step": acts["g_step"] - rec, "act_d_step": acts["d_step"] - rec, "act_block": rec,
        "g_forward_flops": forward_flops(n, model_cfg, cnt["blocks"], s.text_tokens) / context_parallel,
        "d_forward_flops": forward_flops(n, model_cfg, cnt["taps"][-1], s.text_tokens, "tokens", len(cnt["taps"]),
                                         s.head_mlp_ratio) / context_parallel,
        "tokens": n,
    }


def compare(model_cfg: dict = TINY, setup: dict = TINY_SETUP) -> list[tuple[str, float, float, float]]:
    """(quantity, measured, predicted, predicted / measured) rows."""
    got, want = measure(model_cfg, setup), predict(model_cfg, setup)
    return [(k, float(got[k]), float(want[k]), want[k] / got[k] if got[k] else float("nan")) for k in got]


def compare_context_parallel(ranks: int, model_cfg: dict = TINY, setup: dict = TINY_SETUP) -> list[tuple]:
    """compare() for a tiny run whose tokens are split over `ranks` CPU processes (gloo), rank 0's figures:
    the activation rows are what context parallelism changes."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               "-m", "apt.planning.check", str(ranks), out, json.dumps([model_cfg, setup])]
        run = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if run.returncode:
            raise RuntimeError(f"the {ranks}-rank measurement failed:\n{run.stderr[-3000:]}")
        with open(out) as f:
            return [tuple(row) for row in json.load(f)]


def _main(ranks: int, out: str, configs: str) -> None:
    """torchrun entry of compare_context_parallel: measure on every rank, rank 0 writes the rows."""
    import json

    from apt.training.distributed import init_distributed, shutdown_distributed

    model_cfg, setup = json.loads(configs)
    setup = {**setup, "taps": tuple(setup["taps"])}  # JSON made the tuple a list
    info = init_distributed(ranks)
    try:
        got, want = measure(model_cfg, setup, context_parallel=ranks), predict(model_cfg, setup, ranks)
        if info.rank == 0:
            with open(out, "w") as f:
                json.dump([(k, float(got[k]), float(want[k]), want[k] / got[k] if got[k] else float("nan"))
                           for k in got], f)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    import sys

    _main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
