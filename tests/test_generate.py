import pytest

from apt.cli.generate import main
from apt.video import read_mp4


def test_generate_writes_one_mp4_per_prompt_and_a_grid(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment\na red seven\n\na blue two moving left\n")
    report = main(["--model", str(tiny_model_dir), "--prompts-file", str(prompts), "--prompt", "a green one",
                   "--steps", "2", "--height", "16", "--width", "16", "--frames", "5", "--upscale", "2",
                   "--out", str(tmp_path / "out"), "--grid", str(tmp_path / "grid.png")])
    assert len(report["videos"]) == 3
    assert read_mp4(report["videos"][0]).shape == (5, 32, 32, 3)
    assert (tmp_path / "grid.png").exists()
    assert set(report["seconds"]) >= {"text_encoder", "dit", "vae_decode"}


def test_generate_is_reproducible_for_a_seed(tiny_model_dir, tmp_path):
    args = ["--model", str(tiny_model_dir), "--prompt", "a red seven", "--steps", "2", "--height", "16",
            "--width", "16", "--frames", "1", "--upscale", "1", "--seed", "5"]
    a = read_mp4(main(args + ["--out", str(tmp_path / "a.mp4")])["videos"][0])
    b = read_mp4(main(args + ["--out", str(tmp_path / "b.mp4")])["videos"][0])
    assert (a == b).all()


def test_generate_rejects_bad_requests(tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit):
        main(["--model", str(tiny_model_dir), "--out", str(tmp_path / "x.mp4")])  # no prompt
    with pytest.raises(SystemExit):
        main(["--model", str(tiny_model_dir), "--prompt", "a", "--prompt", "b", "--out", str(tmp_path / "x.mp4")])
    with pytest.raises(ValueError, match="multiples of 8"):
        main(["--model", str(tiny_model_dir), "--prompt", "a", "--height", "12", "--out", str(tmp_path / "o")])
