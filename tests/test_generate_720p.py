"""The real serving shape, 1280x720x49 (2 s at 24 fps), end to end on CPU with a tiny-width model of the
real Wan 2.1 layout (16 latent channels, 8x spatial / 4x temporal VAE, 1x2x2 patches): 46,800 tokens
through one DiT forward, the full VAE decode, an H.264 mp4. No quality is expected."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import build_tiny_wan_folder, write_tiny_run

from apt.core.video import read_mp4

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_one_step_1280x720x49_end_to_end_on_cpu(tmp_path):
    model = build_tiny_wan_folder(tmp_path / "tiny-wan-720p", real_layout=True)
    run = tmp_path / "run"
    write_tiny_run(run, model)
    out, report_path = tmp_path / "clip.mp4", tmp_path / "report.json"
    # its own process, so that its peak RSS is the sampler's alone
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), "--checkpoint", str(run),
                           "--prompt", "a red seven moving up and to the left", "--out", str(out),
                           "--report", str(report_path)],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    report = json.loads(report_path.read_text())
    print(f"\n720p one-step on CPU: {report['seconds']}, peak RSS {peak_gb:.2f} GB")
    assert (report["height"], report["width"], report["frames"], report["fps"]) == (720, 1280, 49, 24)
    assert report["steps"] == 1 and report["latent_shape"] == [16, 13, 90, 160]
    assert report["video_shape"] == [3, 49, 720, 1280]
    assert all(report["seconds"][k] > 0 for k in ("text_encoder", "dit", "decode"))
    assert read_mp4(out).shape == (49, 720, 1280, 3)
    assert peak_gb < 8  # measured 2.4 GB; the decoded clip alone is 0.54 GB in float32
