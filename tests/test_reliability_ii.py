"""Reliability II: no code from untrusted files, integrity checks, no symlink or folder clobbering,
generation that streams, and one-line errors for what a user caused. One test (or more) per item of
the probe that found them; the serving bundle's are in test_serving.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import ENV, TESTS, fixture_run

from apt.training.checkpoint import CheckpointManager, CorruptCheckpoint, verify_checkpoint

ROOT = TESTS.parent


def _flip_a_byte(path: Path, at: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def _linear_checkpoints(root: Path, steps=(1, 2)) -> tuple[torch.nn.Module, CheckpointManager]:
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    manager = CheckpointManager(root, keep=3)
    for step in steps:
        manager.save(step, {"m": model}, {"m": (model, opt)}, {"data_position": step, "stage": "t"})
    return model, manager


# -- 2. integrity ------------------------------------------------------------------------------------

def test_a_flipped_bit_in_a_checkpoint_is_named_and_a_resume_falls_back(tmp_path):
    fixture_run(tmp_path, "train.steps=4", "train.checkpoint_every=2")
    newest = tmp_path / "checkpoints" / "step_00000004"
    shard = next(newest.glob("*.distcp"))
    _flip_a_byte(shard)
    with pytest.raises(CorruptCheckpoint, match=rf"{shard.name} is not the file that was saved"):
        verify_checkpoint(newest)
    log = fixture_run(tmp_path, "train.steps=6", "train.checkpoint_every=2")
    assert "resuming from" in log and "step_00000002 instead" in log


def test_a_checkpoint_whose_metadata_pickle_names_other_code_is_never_unpickled(tmp_path):
    import pickle

    root = tmp_path / "checkpoints"
    _linear_checkpoints(root)

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    (root / "step_00000002" / ".metadata").write_bytes(pickle.dumps(Planted()))
    with pytest.raises(CorruptCheckpoint, match="names posix.system"):
        verify_checkpoint(root / "step_00000002")
    assert not (tmp_path / "ran").exists()


def test_a_flipped_bit_in_an_export_stops_its_load_and_its_verify(tmp_path, tiny_run_dir, tiny_model_dir):
    from apt.core.config import ConfigError
    from apt.inference.export import export_checkpoint, verify_export
    from apt.models.loading import load_components

    out = export_checkpoint(tiny_run_dir, tmp_path / "export", str(tiny_model_dir), dtype="fp32")
    manifest = json.loads((out / "seaweed_apt.json").read_text())
    assert "transformer/diffusion_pytorch_model.safetensors" in manifest["sha256"]
    _flip_a_byte(out / "transformer" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ConfigError, match="diffusion_pytorch_model.safetensors is not the file that was exported"):
        load_components(out, parts=("transformer",))
    with pytest.raises(ConfigError, match="not the file that was exported"):
        verify_export(out, tiny_run_dir, tiny_model_dir)
    load_components(out, parts=("vae",))  # the other parts still load


def test_a_weight_far_beyond_any_trained_scale_is_never_saved(tmp_path):
    code = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import torch, trainer_fixture as fx
step = fx.FlowMatchingStage.train_step
def flipped(self, batches, i):
    out = step(self, batches, i)
    if i == 2:  # a flipped exponent bit: finite, absurd
        with torch.no_grad():
            next(self.ema.parameters()).to_local()[0, 0] = 1e29
    return out
fx.FlowMatchingStage.train_step = flipped
from apt.core.command import exit_cleanly
try:
    fx.main([{str(tmp_path)!r}, "train.steps=4", "train.checkpoint_every=1"])
except FloatingPointError as err:
    print("STOPPED", err)
exit_cleanly(0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV)
    assert "STOPPED step 3: weights are not finite or beyond |w| = 10000" in out.stdout, out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000001", "step_00000002"]


# -- 3. a full disk ----------------------------------------------------------------------------------

def test_a_full_disk_torch_save_reports_as_corrupt_position_is_still_a_full_disk(tmp_path, monkeypatch):
    """torch.save's zip writer reports a full disk as "unexpected pos": with no space left it is named as
    a full disk, and the half-written checkpoint is removed."""
    import shutil

    import apt.training.checkpoint as ckpt

    model, manager = _linear_checkpoints(tmp_path / "checkpoints", steps=(1,))

    def cut_short(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed, unexpected pos 704 vs 598")

    monkeypatch.setattr(ckpt.torch, "save", cut_short)
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1 << 20))
    with pytest.raises(OSError, match="disk full while writing the checkpoint .* previous checkpoint is intact"):
        manager.save(2, {"m": model}, {"m": (model, torch.optim.AdamW(model.parameters()))},
                     {"data_position": 2, "stage": "t"})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_00000001"]


# -- 4. the stop rule's state ------------------------------------------------------------------------

def _stage2(out_dir: Path, model_dir: Path, steps: int, cache: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "train_apt.py"), "--config", str(ROOT / "configs/toy/apt.yaml"),
           f"model.path={model_dir}", "adv.generator_init=teacher", "data.num_clips=16", "train.micro_batch_size=4",
           "train.global_batch_size=0", f"train.steps={steps}", "train.checkpoint_every=1", "train.sample_every=0",
           "train.tensorboard=false", "adv.stop_d_auc=0.55", "adv.collapse_patience=2", "adv.lr_discriminator=1e-3",
           "adv.probe_every=0", f"train.out_dir={out_dir}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(ENV, APT_CACHE_DIR=str(cache)))


@pytest.mark.slow
def test_the_stop_rule_stops_a_resumed_run_where_it_stops_the_uninterrupted_one(tmp_path, tiny_model_dir):
    from apt.training.run_folder import read_metrics

    straight = _stage2(tmp_path / "straight", tiny_model_dir, 12, tmp_path / "cache")
    split = tmp_path / "split"
    first = _stage2(split, tiny_model_dir, 1, tmp_path / "cache")  # killed after step 1 (a patience of 2)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _stage2(split, tiny_model_dir, 12, tmp_path / "cache")
    stopped = [r for r in read_metrics(tmp_path / "straight") if "error" in r]
    assert straight.returncode != 0 and stopped and "left the data" in stopped[-1]["error"], straight.stderr[-2000:]
    assert resumed.returncode == straight.returncode
    again = [r for r in read_metrics(split) if "error" in r]
    assert again[-1]["step"] == stopped[-1]["step"], (again[-1], stopped[-1])


# -- 5. symlinks -------------------------------------------------------------------------------------

def test_a_run_folder_never_writes_through_a_symlink(tmp_path):
    from apt.training.run_folder import lock_run_folder

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    fixture_run(run, "train.steps=1")
    (run / ".lock").unlink()
    (run / ".lock").symlink_to(victim)
    lock_run_folder(run).close()
    assert victim.read_text() == "precious\n" and not (run / ".lock").is_symlink()
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(victim)
    fixture_run(run, "train.steps=2")  # the resumed log replaces the link with its own file
    assert victim.read_text() == "precious\n" and not (run / "metrics.jsonl").is_symlink()
    (run / "config_changes.jsonl").symlink_to(victim)
    log = fixture_run(run, "train.steps=3", "train.allow_config_change=true", "lr=0.5", expect_rc=2)
    assert "is a symlink: not written through" in log and victim.read_text() == "precious\n"


def test_generation_replaces_symlinks_instead_of_writing_through_them(tmp_path, tiny_run_dir):
    from apt.cli.generate import generate

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.json", "grid.png", "000_a_red_seven.mp4.partial.mp4"):
        (out / name).symlink_to(victim)
    generate(["--checkpoint", str(tiny_run_dir), "--prompt", "a red seven", "--out", str(out), "--height", "16",
              "--width", "16", "--frames", "5"], keep_tensors=False)
    assert victim.read_text() == "precious\n"
    assert json.loads((out / "report.json").read_text())["status"] == "done"
    assert not any(p.is_symlink() for p in out.iterdir())


# -- 6. folders that are not runs --------------------------------------------------------------------

def test_training_refuses_a_folder_that_is_not_a_run(tmp_path):
    mine = tmp_path / "userproj"
    (mine / "tensorboard").mkdir(parents=True)
    for name, text in (("config.yaml", "my: project\n"), ("notes.tmp", "draft"), ("metrics.jsonl", "{}\n"),
                       ("tensorboard/events.out.tfevents.1", "x")):
        (mine / name).write_text(text)
    log = fixture_run(mine, "train.steps=1", expect_rc=2)
    assert "holds files that are not a seaweed-apt run" in log
    assert (mine / "config.yaml").read_text() == "my: project\n" and (mine / "notes.tmp").exists()
    assert (mine / "tensorboard/events.out.tfevents.1").exists() and (mine / "metrics.jsonl").read_text() == "{}\n"
    fixture_run(tmp_path / "fresh", "train.steps=1")  # a new folder is a run's from then on
    fixture_run(tmp_path / "fresh", "train.steps=2")


# -- 7. silent overwrites ----------------------------------------------------------------------------

def test_generation_outputs_of_other_sources_and_decoders_never_mix(tmp_path, tiny_run_dir, monkeypatch):
    from apt.cli.generate import generate
    from apt.inference.outputs import default_out

    assert default_out(Path("runs/a"), "one-step", "vae") != default_out(Path("runs/a"), "one-step", "fast")
    assert default_out(Path("runs/a/checkpoints/step_00000004"), "one-step", "vae").name == "a-one-step-vae"
    out = tmp_path / "out"
    small = ["--checkpoint", str(tiny_run_dir), "--height", "16", "--width", "16", "--frames", "5", "--out", str(out)]
    generate([*small, "--prompt", "one", "--prompt", "two", "--prompt", "three"], keep_tensors=False)
    (out / "mine.txt").write_text("kept")
    result = generate([*small, "--prompt", "four"], keep_tensors=False)
    assert sorted(p.name for p in out.iterdir()) == ["000_four.mp4", "grid.png", "mine.txt", "report.json"]
    assert set(result.report["seconds"]) >= {"text_encoder", "dit", "decode"}  # the decoder that ran, named alike


def test_a_finished_fast_decoder_is_replaced_only_when_asked(tmp_path):
    from apt.cli.train_decoder import main

    out = tmp_path / "fd"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "report.json"):
        (out / name).write_text("{}")
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(out), "--steps", "1"])
    assert stop.value.code == 2 and (out / "model.safetensors").read_text() == "{}"


# -- 8. streaming generation -------------------------------------------------------------------------

def test_a_crash_keeps_every_finished_clip_and_the_report_lists_them(tmp_path, tiny_run_dir, monkeypatch):
    from apt.cli.generate import generate
    from apt.inference.sampler import Sampler

    real = Sampler.generate
    calls = []

    def crash_on_the_third_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Sampler, "generate", crash_on_the_third_batch)
    out = tmp_path / "out"
    prompts = [a for i in range(5) for a in ("--prompt", f"clip {i}")]
    with pytest.raises(RuntimeError, match="killed"):
        generate(["--checkpoint", str(tiny_run_dir), *prompts, "--batch-size", "2", "--out", str(out), "--height",
                  "16", "--width", "16", "--frames", "5"], keep_tensors=False)
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "running" and len(report["videos"]) == 4
    assert sorted(p.name for p in out.glob("*.mp4")) == [f"00{i}_clip_{i}.mp4" for i in range(4)]


def test_the_preview_grid_is_capped(tmp_path, tiny_run_dir):
    from PIL import Image

    from apt.cli.generate import generate
    from apt.inference.outputs import GRID_CAP

    prompts = [a for i in range(GRID_CAP + 3) for a in ("--prompt", f"c{i}")]
    result = generate(["--checkpoint", str(tiny_run_dir), *prompts, "--batch-size", "8", "--out", str(tmp_path / "o"),
                       "--height", "16", "--width", "16", "--frames", "5", "--upscale", "1"], keep_tensors=False)
    assert len(result.report["videos"]) == GRID_CAP + 3 and result.videos is None  # nothing held in memory
    rows = Image.open(tmp_path / "o" / "grid.png").height // (16 + 2)
    assert rows == GRID_CAP


# -- 9. out of memory is not a bad file --------------------------------------------------------------

def test_preprocessing_stops_on_out_of_memory_instead_of_skipping_the_file(tmp_path, monkeypatch):
    import apt.data.preprocess as pre

    def no_memory(item, spec, max_upscale=0.0):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(pre, "load_clip", no_memory)
    clips = pre._Clips([pre.SourceItem("a.mp4", Path("a.mp4"), "a")], pre.ClipSpec(1, 8, 8, 8.0))
    with pytest.raises(MemoryError, match="out of memory decoding a.mp4"):
        clips[0]


# -- 10. one line, exit status 2, for what the user caused -------------------------------------------

def _one_line(argv: list[str], module: str = "apt.cli.generate", **env) -> str:
    out = subprocess.run([sys.executable, "-c", f"from {module} import main; main({argv!r})"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env={**ENV, **env})
    assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    return out.stderr


@pytest.mark.parametrize("args, message", [
    (["--height", "32000"], "height must be at most 8192"),
    (["--device", "tpu"], "device must be cpu, cuda"),
    (["--upscale", "100000"], "upscale must be at most 16"),
])
def test_impossible_generation_requests_stop_before_anything_runs(args, message):
    assert message in _one_line(["--prompt", "a", *args])


def test_a_prompts_file_that_is_not_text_is_one_line(tmp_path):
    (tmp_path / "p.txt").write_bytes(b"\xff\xfe a red seven \x80\n")
    assert "is not UTF-8 text" in _one_line(["--prompts-file", str(tmp_path / "p.txt")])


def test_a_damaged_export_manifest_is_one_line(tmp_path, tiny_run_dir, tiny_model_dir):
    from apt.inference.export import export_checkpoint

    out = export_checkpoint(tiny_run_dir, tmp_path / "export", str(tiny_model_dir), dtype="fp32")
    (out / "seaweed_apt.json").write_text('{"kind": "one-st')
    assert "seaweed_apt.json is not valid JSON" in _one_line(["--model", str(out), "--prompt", "a"])


def test_a_truncated_newest_checkpoint_falls_back_in_export_and_generate(tmp_path, capsys):
    from apt.core.files import DamagedFile
    from apt.training.run_folder import resolve_checkpoint

    root = tmp_path / "run" / "checkpoints"
    _linear_checkpoints(root, steps=(1, 2))
    shard = next((root / "step_00000002").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:10])
    assert resolve_checkpoint(tmp_path / "run", verify=True).name == "step_00000001"
    assert "using" in capsys.readouterr().err
    with pytest.raises(DamagedFile, match="cut short"):
        resolve_checkpoint(root / "step_00000002", verify=True)  # a step folder named outright: no guessing


def test_a_corrupt_toy_cache_is_encoded_again(tmp_path, monkeypatch, capsys):
    from apt.models.loading import load_components
    from apt.models.model_folder import resolve_model_dir
    from apt.toy.data import toy_latent_dataset

    toy = resolve_model_dir("toy")
    comps = load_components(toy, parts=("vae", "text_encoder", "tokenizer"))
    first = toy_latent_dataset(comps, toy, num_clips=4, seed=3, frames=9, cache_dir=tmp_path, show_progress=False)
    [cache] = tmp_path.glob("toy-latents-*.safetensors")
    cache.write_bytes(cache.read_bytes()[:50])
    again = toy_latent_dataset(comps, toy, num_clips=4, seed=3, frames=9, cache_dir=tmp_path, show_progress=False)
    assert torch.equal(first.latents, again.latents) and "encoding it again" in capsys.readouterr().err


def test_a_decoder_resume_with_other_settings_is_one_line(tmp_path):
    from apt.core.config import ConfigError
    from apt.training.build_state import BuildState

    BuildState(tmp_path / "s.pt", {"lr": 1e-3}, every=1).save_if_due(1, lambda: {"x": 1})
    with pytest.raises(ConfigError, match=r"other settings \(lr\)"):
        BuildState(tmp_path / "s.pt", {"lr": 2e-3}).load()


# -- 11. small ones ----------------------------------------------------------------------------------

def test_a_tilde_in_a_path_is_the_home_folder_and_duplicate_rows_are_refused(monkeypatch):
    from apt.core.config import ConfigError, load_config
    from apt.toy.evaluation import model_specs
    from distill.config import DistillConfig

    cfg = load_config(DistillConfig, None, ["train.out_dir=~/runs/x", "data.cache_dir=~/cache"])
    assert cfg.train.out_dir == str(Path.home() / "runs/x") and cfg.data.cache_dir == str(Path.home() / "cache")
    with pytest.raises(ConfigError, match="given twice"):
        model_specs(25, ["APT=runs/a", "APT=runs/b"])


def test_exports_shards_and_caches_are_written_with_a_plain_files_mode(tmp_path, tiny_run_dir, tiny_model_dir):
    from apt.core.files import save_safetensors
    from apt.inference.export import export_checkpoint

    umask = os.umask(0)
    os.umask(umask)
    out = export_checkpoint(tiny_run_dir, tmp_path / "export", str(tiny_model_dir), dtype="fp32")
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes
    path = save_safetensors({"a": torch.zeros(2)}, tmp_path / "cache.safetensors")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_torchrun_worker_ends_when_its_launcher_is_killed(tmp_path):
    """die_with_parent (set under torchrun): a worker whose launcher is SIGKILLed gets SIGTERM."""
    import signal
    import time

    marker = tmp_path / "worker.pid"
    worker_code = ("import os, time; from apt.training.distributed import die_with_parent; die_with_parent(); "
                   f"open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)")
    launcher = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {worker_code!r}]); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", launcher], env=ENV)
    for _ in range(200):
        if marker.exists() and marker.read_text():
            break
        time.sleep(0.1)
    worker = int(marker.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its launcher")


# -- 12. the signature of a failing run, with the stop rule off --------------------------------------

def test_a_failing_runs_signature_is_warned_about_when_the_stop_rule_is_off(monkeypatch):
    import logging

    from apt.adversarial.guards import CollapseGuard
    from apt.training.run_log import logger

    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "level", logging.INFO)
    try:
        guard = CollapseGuard(1e-3, patience=3)
        for step in range(6):  # no stop: the stop rule is off
            guard.after_sync(step, {"d_loss": 0.2, "d_auc": 0.97, "d_margin": 6.9})
    finally:
        logger.removeHandler(handler)
    warnings = [m for m in seen if "signature of a failing run" in m]
    assert len(warnings) == 1 and "margin 6.9" in warnings[0]  # once, not every step


# -- 13. the quickstart's numbers do not depend on the caller's threads -------------------------------

def test_the_quickstart_pins_its_threads(monkeypatch, tmp_path):
    import apt.toy.quickstart as qs
    from apt.cli.quickstart import QuickstartConfig

    seen = {}

    class FakePopen:
        def __init__(self, cmd, env, stderr):
            seen.setdefault("stage_threads", set()).add(env["OMP_NUM_THREADS"])
            self.stderr = open(os.devnull, "rb")

        def wait(self):
            return 0

    def fake_evaluate(cfg):
        seen["eval_threads"] = cfg.threads
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        return {}

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setattr(qs.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(qs, "evaluate", fake_evaluate)
    import apt.training.plots as plots

    monkeypatch.setattr(plots, "plot_losses", lambda runs, path: None)
    qs.quickstart(QuickstartConfig(out=str(tmp_path / "qs")))
    assert seen == {"stage_threads": {"1"}, "eval_threads": 2}
