"""Building the toy components: the teacher's rounds resume after a crash; build_toy --component
vae-decoder trains the VAE's decoder further with its latent space kept."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan

from apt.toy.components import TOY_MODEL_DIR

BUILD_TOY = Path(__file__).resolve().parents[1] / "scripts" / "build_toy.py"


def build_toy_main():
    spec = importlib.util.spec_from_file_location("build_toy", BUILD_TOY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_decoder_finetune_changes_only_the_decoder_and_records_it(tmp_path):
    main = build_toy_main()
    shutil.copytree(TOY_MODEL_DIR / "vae", tmp_path / "vae")
    before = AutoencoderKLWan.from_pretrained(tmp_path / "vae")
    main(["--component", "vae-decoder", "--out", str(tmp_path), "--steps", "2"])
    after = AutoencoderKLWan.from_pretrained(tmp_path / "vae")

    old, new = before.state_dict(), after.state_dict()
    decoder = [k for k in old if k.startswith(("decoder.", "post_quant_conv."))]
    assert decoder and any(not torch.equal(old[k], new[k]) for k in decoder)
    assert all(torch.equal(old[k], new[k]) for k in old if k not in decoder)  # encoder, quant_conv
    assert after.config.latents_mean == before.config.latents_mean
    assert after.config.latents_std == before.config.latents_std
    entry = json.loads((tmp_path / "build_report.json").read_text())["vae_decoder_finetune"]
    assert entry["steps"] == 2 and entry["heldout_psnr_db"] > 0 and entry["heldout_psnr_db_before"] > 0
    assert 0 < entry["heldout_edge_sharpness_ratio"] < 2


def test_decoder_finetune_without_a_vae_is_refused(tmp_path, capsys):
    main = build_toy_main()
    with pytest.raises(SystemExit) as exit_:
        main(["--component", "vae-decoder", "--out", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert "there is none" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()  # refused before anything is written


def test_a_crashed_teacher_round_resumes_bit_for_bit(tmp_path, monkeypatch):
    import apt.toy.train_teacher as tt
    from safetensors.torch import load_file

    for folder in ("straight", "crashed"):
        for part in ("vae", "text_encoder", "tokenizer"):
            shutil.copytree(TOY_MODEL_DIR / part, tmp_path / folder / part)
    tiny = dict(steps=5, batch_size=2, num_videos=4, num_images=2, save_every=2)
    tt.train_teacher(tmp_path / "straight", **tiny)
    assert not (tmp_path / "straight" / tt.STATE_FILE).exists()  # a finished round leaves no state

    real_loss, calls = tt.flow_matching_loss, []

    def crash_at_step_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("simulated crash")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(tt, "flow_matching_loss", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        tt.train_teacher(tmp_path / "crashed", **tiny)
    assert torch.load(tmp_path / "crashed" / tt.STATE_FILE, weights_only=True)["step"] == 2
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        tt.train_teacher(tmp_path / "crashed", **{**tiny, "lr": 1e-3})
    resumed_calls = []
    monkeypatch.setattr(tt, "flow_matching_loss", lambda *a, **k: resumed_calls.append(1) or real_loss(*a, **k))
    tt.train_teacher(tmp_path / "crashed", **tiny)
    assert len(resumed_calls) == 3  # steps 3 to 5: the first two were read back
    weights = "transformer/diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / "straight" / weights), load_file(tmp_path / "crashed" / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "crashed" / tt.STATE_FILE).exists()


def test_a_crashed_decoder_finetune_resumes_bit_for_bit(tmp_path, monkeypatch):
    import apt.toy.train_vae as tv
    from safetensors.torch import load_file

    for folder in ("straight", "crashed"):
        shutil.copytree(TOY_MODEL_DIR / "vae", tmp_path / folder / "vae")
    tiny = dict(steps=5, batch_size=2, save_every=2)
    tv.finetune_vae_decoder(tmp_path / "straight", **tiny)
    real_loss, calls = tv.reconstruction_loss, []

    def crash_at_step_4(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("simulated crash")
        return real_loss(*args)

    monkeypatch.setattr(tv, "reconstruction_loss", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        tv.finetune_vae_decoder(tmp_path / "crashed", **tiny)
    resumed_calls = []
    monkeypatch.setattr(tv, "reconstruction_loss", lambda *a: resumed_calls.append(1) or real_loss(*a))
    tv.finetune_vae_decoder(tmp_path / "crashed", **tiny)
    assert len(resumed_calls) == 3  # steps 3 to 5
    weights = "vae/diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / "straight" / weights), load_file(tmp_path / "crashed" / weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "crashed").glob(".*state*"))
