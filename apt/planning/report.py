"""The planner's printed table (apt-estimate): memory per GPU, activations, FLOPs and time per update."""

from __future__ import annotations

from apt.planning.estimate import H100_BF16_FLOPS, Setup, seconds_per_update


def _gib(x: float) -> str:
    return f"{x / 2**30:8.2f} GiB"


def cp_note(s: Setup) -> str:
    if s.context_parallel == 1:
        return ""
    return f" ({s.dp_groups} data-parallel groups x context parallelism {s.context_parallel})"


def format_table(r: dict, mfu: float = 0.4, name: str = "") -> str:
    s, c, f = r["setup"], r["counts"], r["flops"]
    lines = [f"{name or 'model'}: {c['blocks']} blocks, dim {c['dim']}, {c['total'] / 1e9:.3f} B params "
             f"(D: taps {list(c['taps'])}, {c['d_trainable'] / 1e9:.3f} B trained, heads {c['d_heads'] / 1e6:.1f} M)",
             f"stage {s.stage}: {s.gpus} GPUs{cp_note(s)}, micro-batch {s.micro_batch}, batch {r['batch']} "
             f"(grad_accum {r['grad_accum']:g}), {s.frames}x{s.height}x{s.width} -> latent "
             f"{'x'.join(map(str, r['latent']))} = {r['tokens']:,} tokens, text {s.text_tokens} tokens",
             "", "per-GPU memory"]
    width = max(len(k) for k in r["memory"])
    lines += [f"  {k:<{width}} {_gib(v)}" for k, v in r["memory"].items()]
    lines += [f"  {'total':<{width}} {_gib(r['total_bytes'])}", "",
              "activations per micro-batch: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in r["activations"].items()),
              "", f"FLOPs: G forward {f['g_forward'] / 1e12:.1f} TFLOP/sample, D forward {f['d_forward'] / 1e12:.1f} "
              f"TFLOP/sample, step {f['per_sample'] / 1e12:.1f} TFLOP/sample, {f['per_step'] / 1e15:,.0f} PFLOP/step",
              f"  at {mfu:.0%} MFU of H100 bf16 ({H100_BF16_FLOPS / 1e12:.0f} TFLOP/s): "
              f"{seconds_per_update(r, mfu):.1f} s/step"]
    if r.get("reward"):
        rw = r["reward"]
        where = "a window anywhere in the clip" if s.reward_window else "the first"
        warm = (f"; the cache warm-up before the window {f['reward_warmup_forward'] / 1e12:.1f} TFLOP at worst"
                if s.reward_window else "")
        lines += [f"reward pass: VAE decode of {s.reward_latent_frames} latent frame(s) per sample ({where}), "
                  f"{rw['forward_flops'] / 1e12:.1f} TFLOP forward (x4 with checkpointed backward, included above); "
                  f"one latent frame's decode keeps {rw['first_frame_bytes'] / 2**30:.2f} GiB (first) / "
                  f"{rw['later_frame_bytes'] / 2**30:.2f} GiB (later){warm}"]
    return "\n".join(lines)
