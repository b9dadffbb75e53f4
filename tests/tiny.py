"""Tiny random models of the real classes (no training, no downloads), and the subprocess launchers the
tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
# One thread per process, and tests/ importable (trainer_fixture and this module) in subprocesses.
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")

TINY_TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
                        out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, cross_attn_norm=True,
                        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
TINY_VAE = dict(base_dim=4, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[True, True],
                scale_factor_spatial=4, scale_factor_temporal=4, latents_mean=[0.1, -0.2, 0.0, 0.3],
                latents_std=[1.5, 0.5, 1.0, 2.0])
TINY_TEXT = dict(vocab_size=384, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                 relative_attention_num_buckets=8, dropout_rate=0.0, is_encoder_decoder=False)

# Real Wan 2.1 layout (16 latent channels, 8x spatial and 4x temporal compression, patch 1x2x2) at tiny
# widths: runs the real 1280x720x49 shape end to end on a CPU (no quality expected).
TINY_REAL_LAYOUT_TRANSFORMER = dict(TINY_TRANSFORMER, in_channels=16, out_channels=16, num_layers=1,
                                    num_attention_heads=2, attention_head_dim=8, rope_max_seq_len=1024)
TINY_REAL_LAYOUT_VAE = dict(base_dim=1, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                            temperal_downsample=[False, True, True], scale_factor_spatial=8, scale_factor_temporal=4,
                            latents_mean=[0.1 * (i % 5 - 2) for i in range(16)],
                            latents_std=[1.0 + 0.25 * (i % 4) for i in range(16)])

# Wan 2.2 TI2V-5B's VAE layout at tiny widths: residual blocks, 2x2 pixel patches as channels, 16x spatial.
TINY_WAN22_VAE = dict(base_dim=4, decoder_base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                      temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                      patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                      latents_mean=[0.1, -0.2, 0.0, 0.3], latents_std=[1.5, 0.5, 1.0, 2.0])


def tiny_transformer(seed: int = 0, **overrides):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(**{**TINY_TRANSFORMER, **overrides})
    # diffusers zero-inits nothing here, but make sure no output is trivially zero
    return model.eval()


def build_tiny_wan_folder(path: str | Path, seed: int = 0, max_text_tokens: int = 32,
                          real_layout: bool = False, wan22: str = "") -> Path:
    """Write transformer/, vae/, text_encoder/, tokenizer/, scheduler/ and model_index.json.
    real_layout=True: Wan 2.1's latent layout (TINY_REAL_LAYOUT_*), for full-resolution shape runs.
    wan22="ti2v-5b": Wan 2.2 TI2V-5B's (patchified VAE, per-token timesteps); "a14b": Wan 2.2 A14B's two
    experts (transformer/ above boundary_ratio, transformer_2/ below)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    if wan22 not in ("", "ti2v-5b", "a14b"):
        raise ValueError(f"wan22 must be '', 'ti2v-5b' or 'a14b', got {wan22!r}")
    vae = TINY_WAN22_VAE if wan22 == "ti2v-5b" else TINY_REAL_LAYOUT_VAE if real_layout else TINY_VAE
    extra = {}  # built before the seed below: the other parts' weights stay those of every other layout
    if wan22 == "ti2v-5b":
        extra = dict(expand_timesteps=True)
    elif wan22 == "a14b":
        extra = dict(transformer_2=tiny_transformer(seed + 1), boundary_ratio=0.875)
    torch.manual_seed(seed)
    pipe = WanPipeline(
        tokenizer=ByT5Tokenizer(model_max_length=max_text_tokens),
        text_encoder=UMT5EncoderModel(UMT5Config(**TINY_TEXT)).eval(),
        vae=AutoencoderKLWan(**vae).eval(),
        transformer=tiny_transformer(seed, **(TINY_REAL_LAYOUT_TRANSFORMER if real_layout else {})),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        **extra,
    )
    pipe.save_pretrained(path)
    return Path(path)


def fixture_run(out_dir: Path, *overrides: str, expect_rc: int = 0) -> str:
    """One world-of-one training run of the fixture stage (tests/trainer_fixture.py) in a subprocess;
    fails with the end of its log unless it exits with `expect_rc`; returns stdout + stderr."""
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import trainer_fixture as fx; "
            f"from apt.core.command import run_command, exit_cleanly; "
            f"run_command(lambda: fx.main(sys.argv[1:])); exit_cleanly(0)")
    out = subprocess.run([sys.executable, "-c", code, str(out_dir), *overrides], capture_output=True, text=True,
                         timeout=300, env=ENV)
    log = out.stdout + out.stderr
    assert out.returncode == expect_rc, log[-4000:]
    return log


def run_training_script(script: Path, config: Path, overrides: list[str], tmp_path: Path, nproc: int = 2,
                        timeout: int = 600) -> None:
    """Launch a training script as an `nproc`-process gloo torchrun (one thread per rank, the toy data
    cached under tmp_path) and fail with the end of its stderr if it fails."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone",
           str(script), "--config", str(config), *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", APT_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]


def straight_and_resumed_runs(script: Path, config: Path, overrides: list[str], tmp_path: Path,
                              steps: int = 4, stop_at: int = 2) -> tuple[Path, Path]:
    """Launch a 2-process gloo torchrun training `steps` straight, and again stopped at `stop_at`
    then resumed (train.resume=auto); returns the two run folders. Needs checkpoint_every | stop_at."""

    def run(out_dir: Path, n: int) -> None:
        run_training_script(script, config, ["train.sample_every=0", *overrides, f"train.out_dir={out_dir}",
                                             f"train.steps={n}"], tmp_path)

    straight, split = tmp_path / "straight", tmp_path / "split"
    run(straight, steps)
    run(split, stop_at)
    run(split, steps)
    return straight, split


def write_tiny_run(run_dir: str | Path, model_dir: str | Path, step: int = 3, names=("ema", "student"),
                   seed: int = 0) -> Path:
    """A training-run folder as stage 1 leaves it (config.yaml naming the teacher, one DCP checkpoint),
    its models perturbed copies of the teacher so that each differs from the teacher and the others.
    Returns the step directory."""
    from apt.models.backbone import WanBackbone
    from apt.training.checkpoint import CheckpointManager
    from apt.training.run_folder import checkpoints_dir

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"model:\n  path: {Path(model_dir).resolve()}\n")
    gen = torch.Generator().manual_seed(seed)
    models = {}
    for name in names:
        backbone = WanBackbone.from_pretrained(model_dir)
        with torch.no_grad():
            for p in backbone.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        models[name] = backbone
    return CheckpointManager(checkpoints_dir(run_dir)).save(step, models, {}, {"samples_seen": 0})
