import pytest
import torch

from apt.cli.generate import main
from apt.core.config import ConfigError
from apt.core.video import read_mp4


def test_generate_writes_one_mp4_per_prompt_and_a_grid(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment\na red seven\n\na blue two moving left\n")
    report = main(["--model", str(tiny_model_dir), "--prompts-file", str(prompts), "--prompt", "a green one",
                   "--steps", "2", "--height", "16", "--width", "16", "--frames", "5", "--upscale", "2",
                   "--out", str(tmp_path / "out"), "--grid", str(tmp_path / "grid.png")])
    assert len(report["videos"]) == 3
    assert read_mp4(report["videos"][0]).shape == (5, 32, 32, 3)
    assert (tmp_path / "grid.png").exists()
    assert set(report["seconds"]) >= {"text_encoder", "dit", "decode"}


def test_generate_is_reproducible_for_a_seed(tiny_model_dir, tmp_path):
    args = ["--model", str(tiny_model_dir), "--prompt", "a red seven", "--steps", "2", "--height", "16",
            "--width", "16", "--frames", "1", "--upscale", "1", "--seed", "5"]
    a = read_mp4(main(args + ["--out", str(tmp_path / "a.mp4")])["videos"][0])
    b = read_mp4(main(args + ["--out", str(tmp_path / "b.mp4")])["videos"][0])
    assert (a == b).all()


def test_generate_rejects_bad_requests(tiny_model_dir, tmp_path, capsys):
    def refused(*args: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_status:
            main(["--model", str(tiny_model_dir), "--prompt", "a", "--out", str(tmp_path / "o"), *args])
        assert exit_status.value.code == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert "Traceback" not in err and last.startswith("error: "), err  # one line says what is wrong
        return last

    with pytest.raises(SystemExit):
        main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "x.mp4")])  # no prompt
    with pytest.raises(SystemExit):
        main(["--model", str(tiny_model_dir), "--prompt", "a", "--prompt", "b", "--out", str(tmp_path / "x.mp4")])
    assert "height must be positive" in refused("--height", "-32")
    assert "multiples of 8" in refused("--height", "12")
    assert "4k+1" in refused("--frames", "6")
    assert "steps must be at most 1000" in refused("--steps", "100000000")
    assert not (tmp_path / "o").exists()


def _one_step(run_dir, out, *extra):
    from apt.cli.generate import generate

    return generate(["--checkpoint", str(run_dir), "--height", "16", "--width", "16", "--frames", "5",
                     "--out", str(out), *extra])


PROMPTS = ["--prompt", "a red seven", "--prompt", "a blue two moving left", "--prompt", "a green one"]


def test_one_step_and_two_step_from_a_checkpoint_do_not_depend_on_batching(tiny_run_dir, tmp_path):
    one = _one_step(tiny_run_dir, tmp_path / "one", *PROMPTS, "--seed", "3")
    assert one.report["steps"] == 1 and one.report["guidance_scale"] == 1.0 and one.report["mode"].startswith("one-step")
    assert one.latents.shape == (3, 4, 2, 4, 4) and one.videos.shape == (3, 3, 5, 16, 16)
    two = _one_step(tiny_run_dir, tmp_path / "two", *PROMPTS, "--seed", "3", "--steps", "2")
    two_single = _one_step(tiny_run_dir, tmp_path / "two1", *PROMPTS, "--seed", "3", "--steps", "2", "--batch-size", "1")
    # the re-noising noise is drawn per sample: batch of 3 == three batches of 1
    assert torch.allclose(two.latents, two_single.latents, atol=1e-5)
    assert not torch.allclose(one.latents, two.latents, atol=1e-3)
    # sample i uses seed + i: the second prompt alone at seed 4 is sample 1 of the batch at seed 3
    alone = _one_step(tiny_run_dir, tmp_path / "alone", "--prompt", "a blue two moving left", "--seed", "4",
                      "--steps", "2")
    assert torch.allclose(alone.latents[0], two.latents[1], atol=1e-5)
    # EMA (default) and student are different models
    student = _one_step(tiny_run_dir, tmp_path / "s", *PROMPTS, "--seed", "3", "--weights", "student")
    assert not torch.allclose(one.latents, student.latents, atol=1e-3)


def test_one_step_rejects_cfg_bad_steps_and_unknown_backends(tiny_run_dir, tmp_path):
    with pytest.raises(ConfigError, match="guidance"):
        _one_step(tiny_run_dir, tmp_path / "o", "--prompt", "a", "--cfg", "5")
    with pytest.raises(ConfigError, match="1 or 2 steps"):
        _one_step(tiny_run_dir, tmp_path / "o", "--prompt", "a", "--steps", "4")
    with pytest.raises(SystemExit):
        _one_step(tiny_run_dir, tmp_path / "o", "--prompt", "a", "--dtype", "fp16")
    with pytest.raises(ValueError, match="unknown attention backend 'bogus'"):
        _one_step(tiny_run_dir, tmp_path / "o", "--prompt", "a", "--attention-backend", "bogus")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _one_step(tmp_path / "missing", tmp_path / "o", "--prompt", "a")
    with pytest.raises(ConfigError, match="not a diffusers-layout folder"):
        _one_step(tiny_run_dir, tmp_path / "o", "--prompt", "a", "--model", str(tmp_path))  # not a model folder


def test_config_yaml_sets_defaults_that_flags_override(tiny_model_dir, tmp_path):
    from apt.cli.generate import parse_args
    from apt.inference.engine import sampling_params as sample_config

    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"model: {tiny_model_dir}\nprompts: [a red seven, a blue two]\nsteps: 2\nheight: 16\n"
                   f"width: 16\nframes: 5\nseed: 9\nattention_backend: native\n")
    report = main(["--config", str(cfg), "--seed", "1", "--out", str(tmp_path / "o")])
    assert report["seed"] == 1 and report["steps"] == 2 and len(report["videos"]) == 2
    assert (report["height"], report["width"], report["frames"]) == (16, 16, 5)
    assert parse_args(["--config", str(cfg), "--prompt", "x"]).prompts == ["x"]  # flags replace the config's prompts
    assert parse_args(["--config", str(cfg), "seed=4"]).seed == 4  # key=value overrides too
    cfg.write_text("heigth: 16\n")
    with pytest.raises(ConfigError, match="heigth"):
        parse_args(["--config", str(cfg)])
    cfg.write_text("dtype: fp16\n")
    with pytest.raises(ConfigError, match="dtype"):
        parse_args(["--config", str(cfg)])
    # a real (non-toy) model defaults to 1280x720x49 at 24 fps; one-step models to 1 step, no CFG
    sample, size = sample_config(parse_args(["--prompt", "a"]), tiny_model_dir, one_step=True)
    assert (sample.height, sample.width, sample.frames, size["fps"], sample.steps, sample.guidance_scale) == \
        (720, 1280, 49, 24, 1, 1.0)


def test_shipped_generate_configs_parse(tmp_path):
    from pathlib import Path

    from apt.cli.generate import parse_args
    from apt.inference.engine import sampling_params as sample_config
    from apt.toy.components import TOY_MODEL_DIR

    root = Path(__file__).resolve().parents[1] / "configs"
    toy = parse_args(["--config", str(root / "toy" / "generate.yaml")])
    sample, size = sample_config(toy, TOY_MODEL_DIR, one_step=False)
    assert (sample.height, sample.width, sample.frames, size["fps"]) == (32, 32, 9, 8) and toy.prompts
    for name, height in (("wan2.1-1.3b", 720), ("wan2.1-14b", 720), ("wan2.2-ti2v-5b", 704)):
        args = parse_args(["--config", str(root / name / "generate.yaml"), "--prompt", "a"])
        assert (args.height, args.width, args.frames, args.fps, args.dtype) == (height, 1280, 49, 24, "bf16")
