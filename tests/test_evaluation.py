import importlib.util
import json
from pathlib import Path

import pytest
import torch

from apt.toy.components import TOY_MODEL_DIR
from apt.toy.evaluation import evaluate_models, markdown_table, model_specs

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "evaluate.py"


def _script_main():
    """scripts/ is not a package: load the script from its file; it runs apt.cli.evaluate (its main
    returns the report, the script's cli() only an exit status)."""
    import apt.cli.evaluate

    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.cli is apt.cli.evaluate.cli
    return apt.cli.evaluate.main


def test_model_specs_from_cli_arguments():
    specs = model_specs(25, ["cd=runs/a", "apt=runs/b"], ["apt"], raw=["apt"])
    assert [s.name for s in specs] == ["real data", "real data, VAE round trip", "teacher 25-step", "cd 1-step",
                                       "apt 1-step", "apt 2-step", "apt 1-step, no EMA"]
    assert specs[-2].steps == 2 and str(specs[-2].run_dir) == "runs/b" and specs[-2].weights == "ema"
    assert specs[-1].steps == 1 and str(specs[-1].run_dir) == "runs/b" and specs[-1].weights == "raw"
    with pytest.raises(ValueError, match="names no --run"):
        model_specs(25, ["cd=runs/a"], ["apt"])
    with pytest.raises(ValueError, match="--raw 'apt' names no --run"):
        model_specs(25, ["cd=runs/a"], raw=["apt"])
    with pytest.raises(ValueError, match="name=run_dir"):
        model_specs(25, ["runs/a"])


def test_teacher_evaluation_is_deterministic_and_scripted(tmp_path):
    specs = model_specs(2, [])
    first, videos, requests = evaluate_models(specs, TOY_MODEL_DIR, n=4, seed=1, progress=False)
    second, videos2, _ = evaluate_models(specs, TOY_MODEL_DIR, n=4, seed=1, progress=False)
    strip = lambda r: {k: {m: v for m, v in d.items() if m != "seconds_per_clip"} for k, d in r.items()}  # noqa: E731
    assert strip(first) == strip(second)
    assert torch.equal(videos["teacher 2-step"], videos2["teacher 2-step"])
    assert first["teacher 2-step"]["seconds_per_clip"] > 0 and first["real data"]["seconds_per_clip"] is None
    assert markdown_table(first).count("\n") == 5
    # the VAE round trip keeps content but softens edges: the reference for generated clips
    for metric in ("sharpness_ratio", "edge_sharpness_ratio"):
        assert first["real data, VAE round trip"][metric] < first["real data"][metric]

    report = _script_main()(["--teacher-steps", "2", "--n", "4", "--seed", "1", "--out", str(tmp_path)])
    assert strip(report["models"]) == strip(first)
    assert json.loads((tmp_path / "metrics.json").read_text())["settings"]["seed"] == 1
    assert (tmp_path / "table.md").read_text().startswith("| model |") and (tmp_path / "grid.png").stat().st_size > 0


def test_plot_losses_writes_png(tmp_path):
    from apt.training.plots import plot_losses
    from apt.training.run_log import RunLog

    cd, adv = RunLog(tmp_path / "cd"), RunLog(tmp_path / "apt")
    for step in range(1, 6):
        cd.write({"step": step, "loss": 1.0 / step})
        adv.write({"step": step, "d_loss": 1.4, "g_loss": 0.7, "d_real": 0.1, "d_fake": -0.1, "d_accuracy": 0.5,
                   "aR1": 1e-4})
    out = plot_losses({"cd": tmp_path / "cd", "apt": tmp_path / "apt"}, tmp_path / "plots" / "losses.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError):
        plot_losses({"none": tmp_path / "missing"}, tmp_path / "x.png")


def test_plot_evaluations_script_places_each_model_and_refuses_bad_input(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    row = lambda e, f: {"edge_sharpness_ratio": e, "frechet_distance": f, "same_digit_all_frames": 0.5}  # noqa: E731
    for name, models in (("one", {"real data": row(1.0, 7.0), "run 1-step": row(0.62, 27.8)}),
                         ("two", {"teacher 25-step": row(0.69, 38.4), "CD 1-step": row(0.66, 46.5)})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"settings": {}, "models": models}))

    def plot(*args):
        return subprocess.run([sys.executable, str(root / "scripts" / "plot_evaluations.py"), *args,
                               "--out", str(tmp_path / "fig.png")], capture_output=True, text=True, timeout=120)

    ok = plot("--x", "edge_sharpness_ratio", "--y", "frechet_distance", "--y", "same_digit_all_frames",
              f"APT/default={tmp_path / 'one' / 'metrics.json'}",  # the only generated model of the file
              f"references/CD={tmp_path / 'two' / 'metrics.json'}:CD 1-step")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = tmp_path / "one" / "metrics.json"
    for args, message in ((["--x", "edge_sharpness_ratio", "--y", "nonsense", f"a/b={one}"],
                           "column 'nonsense' is not a number in a/b"),
                          (["--x", "edge_sharpness_ratio", "--y", "frechet_distance",
                            f"a/b={tmp_path / 'two' / 'metrics.json'}"], "name one as PATH:MODEL"),
                          (["--x", "edge_sharpness_ratio", "--y", "frechet_distance", "no-group=x.json"],
                           "expected GROUP/LABEL=METRICS_JSON"),
                          (["--x", "edge_sharpness_ratio", "--y", "frechet_distance", "a/b=missing/metrics.json"],
                           "no such metrics.json")):
        bad = plot(*args)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and message in bad.stderr, bad.stderr
        assert bad.stderr.count("\n") == 1


def test_generator_two_step_is_deterministic(monkeypatch):
    import apt.training.run_folder
    from apt.models.generator import OneStepGenerator
    from apt.models.loading import load_components
    from apt.toy.evaluation import ModelSpec, check_prompts, generate

    comps = load_components(TOY_MODEL_DIR)
    # the teacher as a (poor) one-step generator: no training checkpoint needed to test the sampling path
    monkeypatch.setattr(apt.training.run_folder, "load_generator",
                        lambda run_dir, model_dir, weights: OneStepGenerator(comps.transformer))
    requests = check_prompts(3, seed=2, held_out=True)
    clips = {}
    for steps in (1, 2, 2):
        spec = ModelSpec(f"g {steps}", "generator", steps, Path("unused"))  # batch_size 2: batches of 2 and 1
        videos, seconds = generate(spec, requests, comps, TOY_MODEL_DIR, seed=4, batch_size=2, progress=False)
        assert videos.shape == (3, 3, 9, 32, 32) and seconds > 0
        clips.setdefault(steps, []).append(videos)
    assert torch.equal(clips[2][0], clips[2][1])
    assert not torch.allclose(clips[1][0], clips[2][0])
    # per-sample seeds: a clip does not depend on the batch it was generated in
    alone, _ = generate(ModelSpec("g 2", "generator", 2, Path("unused")), requests[2:], comps, TOY_MODEL_DIR,
                        seed=6, batch_size=1, progress=False)
    assert torch.allclose(alone[0], clips[2][0][2], atol=1e-5)
