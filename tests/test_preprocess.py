"""Real-data path: a folder of mp4s (one corrupt, one too short) -> shards -> the training dataset."""

import json
from pathlib import Path

import pytest
import torch

from apt.cli.preprocess import PreprocessConfig, main
from apt.core.config import ConfigError, load_config
from apt.core.video import write_mp4
from apt.data.preprocess import preprocess
from apt.data.shards import ShardDataset, shard_files
from apt.data.sources import training_dataset as build_training_dataset
from apt.data.video_folder import ClipSpec, discover, load_clip
from apt.models.loading import load_components
from apt.training.distributed import DistInfo
from distill.config import DistillConfig

ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
CLIP = dict(frames=5, height=16, width=16, fps=8.0)  # tiny VAE: 4x temporal, 4x spatial -> latent (4, 2, 4, 4)


def _video(frames: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, 1, h, w, generator=g) * 2 - 1
    drift = torch.linspace(-0.3, 0.3, frames)[None, :, None, None]
    return (base + drift).clamp(-1, 1)


@pytest.fixture
def video_folder(tmp_path):
    root = tmp_path / "videos"
    write_mp4(_video(8, 20, 28, 0), root / "a_landscape.mp4", fps=8)  # cropped to 16x16 from 16x22
    write_mp4(_video(12, 24, 24, 1), root / "sub" / "b_square.mp4", fps=12)  # resampled 12 -> 8 fps
    write_mp4(_video(6, 32, 18, 2), root / "c_portrait.mp4", fps=8)
    write_mp4(_video(2, 16, 16, 3), root / "d_short.mp4", fps=8)  # 0.25 s: too short for 5 frames at 8 fps
    (root / "e_corrupt.mp4").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    write_mp4(_video(8, 16, 16, 4), root / "f_uncaptioned.mp4", fps=8)
    captions = {"a_landscape.mp4": "a red seven moving up", "sub/b_square.mp4": "a blue two, moving right",
                "c_portrait.mp4": "a tall yellow four", "d_short.mp4": "too short", "e_corrupt.mp4": "broken"}
    csv = tmp_path / "captions.csv"
    csv.write_text("path,caption\n" + "".join(f'{k},"{v}"\n' for k, v in captions.items()))
    return root, csv, captions


def _run(root, csv, out, model, **kw):
    return preprocess(PreprocessConfig(videos=str(root), captions=str(csv), out=str(out), model=str(model),
                                       shard_size=2, storage_dtype="fp32", **{**CLIP, **kw}), ONE)


def test_folder_to_shards_to_dataset_round_trip(video_folder, tmp_path, tiny_model_dir):
    root, csv, captions = video_folder
    out = tmp_path / "shards"
    report = _run(root, csv, out, tiny_model_dir)
    assert report["encoded"] == 3 and report["discovered"] == 6 and report["skipped"] == 3
    reasons = {s["path"]: s["reason"] for s in report["skipped_files"]}
    assert reasons["e_corrupt.mp4"].startswith("unreadable") and reasons["d_short.mp4"].startswith("too short")
    assert reasons["f_uncaptioned.mp4"] == "no caption"
    assert report["skipped_by_reason"] == {"unreadable": 1, "too short": 1, "no caption": 1}
    assert json.loads((out / "report.json").read_text())["encoded"] == 3
    assert [p.name for p in shard_files(out)] == ["r000-00000.safetensors", "r000-00001.safetensors"]

    data = ShardDataset(out)
    assert len(data) == 3 and data.index["latent_shape"] == [4, 2, 4, 4] and data.index["text_shape"] == [32, 16]
    comps = load_components(tiny_model_dir, parts=("vae", "text_encoder", "tokenizer"))
    items, _ = discover(root, csv)
    by_caption = {it.caption: it for it in items}
    for i in range(len(data)):
        item = data[i]
        src = by_caption[item["caption"]]
        assert item["latent"].dtype == torch.float32 and item["text"].shape == (32, 16)
        clip = load_clip(src, ClipSpec(**CLIP))
        torch.testing.assert_close(item["latent"], comps.vae.encode(clip[None])[0], rtol=1e-4, atol=1e-5)
        # stored without padding, re-padded with zeros: equal to the padded encoding training used before
        torch.testing.assert_close(item["text"], comps.text.encode(item["caption"])[0], rtol=1e-5, atol=1e-6)


def test_resume_skips_done_work_and_ignores_a_half_written_shard(video_folder, tmp_path, tiny_model_dir):
    root, csv, _ = video_folder
    out = tmp_path / "shards"
    _run(root, csv, out, tiny_model_dir)
    first = {p.name: p.stat().st_mtime_ns for p in shard_files(out)}
    (out / "shards" / ".r000-00002.safetensors.tmp").write_bytes(b"crash")  # a crash mid-write
    again = _run(root, csv, out, tiny_model_dir)
    assert again["this_run"]["pending"] == 0 and again["encoded"] == 3 and again["skipped"] == 3
    assert {p.name: p.stat().st_mtime_ns for p in shard_files(out)} == first  # nothing rewritten
    shard_files(out)[-1].unlink()  # lose the last shard: its one item is encoded again, in a new shard
    third = _run(root, csv, out, tiny_model_dir)
    assert third["this_run"]["pending"] == 1 and third["this_run"]["encoded"] == 1 and len(ShardDataset(out)) == 3
    assert shard_files(out)[-1].name == "r000-00001.safetensors"
    with pytest.raises(ValueError, match="other settings"):
        _run(root, csv, out, tiny_model_dir, fps=4.0)  # a different clip spec into the same set


def test_sidecar_captions_and_images_as_one_frame_clips(tmp_path, tiny_model_dir):
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(root / "red.png")
    (root / "red.txt").write_text("a red square\n")
    write_mp4(_video(3, 16, 16, 5), root / "clip.mp4", fps=8)
    (root / "clip.txt").write_text("a clip")
    main(["--videos", str(root), "--out", str(tmp_path / "s"), "--model", str(tiny_model_dir), "--frames", "1",
          "--height", "16", "--width", "16", "--fps", "8"])
    data = ShardDataset(tmp_path / "s")
    assert sorted(data[i]["caption"] for i in range(2)) == ["a clip", "a red square"]
    assert data[0]["latent"].shape == (4, 1, 4, 4)
    red = [data[i] for i in range(2) if data[i]["caption"] == "a red square"][0]
    assert data.index["dtype"] == "bf16"  # the default storage
    comps = load_components(tiny_model_dir, parts=("vae",))
    expect = comps.vae.encode(load_clip(discover(root)[0][1], ClipSpec(1, 16, 16, 8))[None])[0]
    torch.testing.assert_close(red["latent"], expect, rtol=0.02, atol=0.02)  # bf16 on disk


def test_training_config_reads_shards_and_checks_them(video_folder, tmp_path, tiny_model_dir):
    root, csv, _ = video_folder
    out = tmp_path / "shards"
    _run(root, csv, out, tiny_model_dir)
    comps = load_components(tiny_model_dir)
    base = ["data.source=shards", f"data.path={out}", f"model.path={tiny_model_dir}", "data.frames=5"]
    cfg = load_config(DistillConfig, None, base)
    data = build_training_dataset(cfg.data, comps, tiny_model_dir, ONE)
    assert len(data) == 3 and data[0]["latent"].shape == (4, 2, 4, 4)

    with pytest.raises(ConfigError, match="data.path"):
        load_config(DistillConfig, None, ["data.source=shards"])
    with pytest.raises(ConfigError, match="data.path.*index.json"):
        build_training_dataset(load_config(DistillConfig, None, [*base, f"data.path={tmp_path}"]).data, comps,
                               tiny_model_dir, ONE)
    with pytest.raises(ConfigError, match="data.frames=9"):
        build_training_dataset(load_config(DistillConfig, None, [*base, "data.frames=9"]).data, comps,
                               tiny_model_dir, ONE)
    index = json.loads((out / "index.json").read_text())
    index["latent_shape"][0] = 16  # as if encoded by Wan's VAE
    (out / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="16-channel latents"):
        build_training_dataset(cfg.data, comps, tiny_model_dir, ONE)


@pytest.mark.parametrize("stage", ["distill", "apt"])
def test_both_stages_train_on_shards(stage, video_folder, tmp_path, tiny_model_dir, monkeypatch):
    root, csv, _ = video_folder
    out = tmp_path / "shards"
    _run(root, csv, out, tiny_model_dir)
    monkeypatch.setenv("APT_CACHE_DIR", str(tmp_path / "cache"))
    args = ["--config", str(Path(__file__).resolve().parents[1] / "configs" / "toy" / f"{stage}.yaml"),
            f"model.path={tiny_model_dir}", "data.source=shards", f"data.path={out}", "data.frames=5",
            "train.steps=1", "train.micro_batch_size=2", "train.global_batch_size=0", "train.sample_every=0",
            f"train.out_dir={tmp_path / 'run'}"]
    if stage == "apt":
        from apt.cli.train import main as train
        args.append("adv.generator_init=teacher")
    else:
        from apt.cli.distill import main as train
    result = train(args)
    assert result["step"] == 1 and all(torch.isfinite(torch.tensor(v)) for v in result["metrics"].values()
                                       if isinstance(v, float))
    # the trainer's throughput columns: the stage counts its FLOPs (apt/training/flops.py), no peak on a CPU
    assert result["metrics"]["tflops_per_device"] > 0 and result["metrics"]["peak_memory_gb"] > 0
    assert "mfu" not in result["metrics"]


@pytest.mark.slow
def test_torchrun_two_ranks_split_the_work(video_folder, tmp_path, tiny_model_dir):
    import os
    import subprocess
    import sys

    root, csv, _ = video_folder
    out = tmp_path / "shards"
    script = Path(__file__).resolve().parents[1] / "scripts" / "preprocess.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script),
           "--videos", str(root), "--captions", str(csv), "--out", str(out), "--model", str(tiny_model_dir),
           "--frames", "5", "--height", "16", "--width", "16", "--fps", "8", "--shard-size", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    names = sorted(p.name for p in shard_files(out))
    assert {n[:4] for n in names} == {"r000", "r001"} and len(names) == 3  # items r::2 of the 3 good ones
    assert len(ShardDataset(out)) == 3
    assert json.loads((out / "report.json").read_text())["skipped"] == 3


def test_a_caption_that_is_not_utf8_skips_its_file_not_the_run(tmp_path, tiny_model_dir):
    from PIL import Image

    from apt.data.video_folder import NOT_UTF8, discover

    root = tmp_path / "imgs"
    root.mkdir()
    for name, colour in (("good", (200, 10, 10)), ("latin", (10, 200, 10)), ("other", (10, 10, 200))):
        Image.new("RGB", (16, 16), colour).save(root / f"{name}.png")
    (root / "good.txt").write_text("a red square")
    (root / "latin.txt").write_bytes("un carré vert".encode("latin-1"))
    (root / "other.txt").write_text("a blue square")
    main(["--videos", str(root), "--out", str(tmp_path / "s"), "--model", str(tiny_model_dir), "--frames", "1",
          "--height", "16", "--width", "16", "--fps", "8"])
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert {"path": "latin.png", "reason": NOT_UTF8} in report["skipped_files"]
    assert sorted(ShardDataset(tmp_path / "s")[i]["caption"] for i in range(2)) == ["a blue square", "a red square"]

    table = tmp_path / "captions.csv"
    table.write_bytes("path,caption\ngood.png,a red square\nlatin.png,un carré vert\n".encode("latin-1"))
    items, skipped = discover(root, table)
    assert [it.key for it in items] == ["good.png"] and {"path": "latin.png", "reason": NOT_UTF8} in skipped
    table.write_bytes("path,caption\n".encode("utf-16"))  # not UTF-8 at all: the file is named
    with pytest.raises(ConfigError, match=rf"{table.name}: a CSV caption file needs .*not UTF-8"):
        discover(root, table)


def test_long_videos_give_several_clips_and_small_ones_follow_the_upscale_policy(tmp_path, tiny_model_dir):
    from apt.data.video_folder import SourceItem, cut_clips

    root = tmp_path / "v"
    # 40 frames at 8 fps (5 s); frame k has brightness k / 40, so a clip's first frame says where it starts
    ramp = torch.linspace(-1, 1, 41)[:40].view(1, 40, 1, 1).expand(3, 40, 16, 16)
    write_mp4(ramp, root / "long.mp4", fps=8)
    write_mp4(_video(8, 4, 4, 0), root / "tiny.mp4", fps=8)  # 4x4: 4x upscaling to cover 16x16
    for name in ("long", "tiny"):
        (root / f"{name}.txt").write_text(f"a {name} clip")
    spec = ClipSpec(**CLIP)  # 5 frames at 8 fps: 0.5 s from the first to the last frame
    items = cut_clips(discover(root)[0], spec, per_video=10)
    starts = [(it.key, it.start) for it in items]
    # back to back (stride = 5 / 8 s) while a clip fits in 5 s; the tiny one is 1 s long: one clip
    assert starts == [("long.mp4", 0.0), ("long.mp4@0.625s", 0.625), ("long.mp4@1.25s", 1.25),
                      ("long.mp4@1.875s", 1.875), ("long.mp4@2.5s", 2.5), ("long.mp4@3.125s", 3.125),
                      ("long.mp4@3.75s", 3.75), ("long.mp4@4.375s", 4.375), ("tiny.mp4", 0.0)]
    assert [it.start for it in cut_clips(discover(root)[0], spec, per_video=3, stride=2.0)][:3] == [0.0, 2.0, 4.0]
    brightness = [load_clip(it, spec)[:, 0].mean().item() for it in items[:3]]
    frame = [round((b + 1) / 2 * 40) for b in brightness]  # the source frame each clip starts on
    assert frame == [0, 5, 10], frame  # 0.625 s = 5 source frames at 8 fps
    with pytest.raises(ValueError, match=r"too small: 4x4 needs 4.00x upscaling to cover 16x16 \(max_upscale 2\)"):
        load_clip(SourceItem("tiny.mp4", root / "tiny.mp4", "a tiny clip"), spec, max_upscale=2)

    report = main(["--videos", str(root), "--out", str(tmp_path / "s"), "--model", str(tiny_model_dir),
                   "--frames", "5", "--height", "16", "--width", "16", "--fps", "8", "--clips-per-video", "3",
                   "--max-upscale", "2", "--storage-dtype", "fp32"])
    assert report["encoded"] == 3 and report["skipped_by_reason"] == {"too small": 1}
    assert len(ShardDataset(tmp_path / "s")) == 3
    again = main(["--videos", str(root), "--out", str(tmp_path / "s"), "--model", str(tiny_model_dir),
                  "--frames", "5", "--height", "16", "--width", "16", "--fps", "8", "--clips-per-video", "3",
                  "--max-upscale", "2", "--storage-dtype", "fp32"])
    assert again["this_run"]["pending"] == 0  # resumes by clip key: nothing to do


def test_a_clip_size_the_model_s_patches_do_not_tile_is_refused_before_encoding(video_folder, tmp_path,
                                                                              tiny_model_dir):
    """The tiny VAE is 4x spatial and the transformer's patches 2x2: 12 px rows give 3 latent rows."""
    root, csv, _ = video_folder
    with pytest.raises(ConfigError, match="12x16 gives a 3x4 latent grid .* multiples of 8 x 8"):
        _run(root, csv, tmp_path / "shards", tiny_model_dir, height=12)
    assert not list((tmp_path / "shards").glob("*.safetensors"))  # nothing encoded
