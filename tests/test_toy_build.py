"""Building the toy components: every build resumes after a crash; build_toy --component vae-decoder
trains the VAE's decoder further with its latent space kept."""

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


# (module, function, its loss function and how often it is called after training, parts copied from the
# shipped toy, weights compared, tiny settings)
BUILDS = {
    "teacher round": ("apt.toy.train_teacher", "train_teacher", "flow_matching_loss", 0,
                      ("vae", "text_encoder", "tokenizer"), "transformer/diffusion_pytorch_model.safetensors",
                      dict(num_videos=4, num_images=2)),
    "VAE decoder fine-tune": ("apt.toy.train_vae", "finetune_vae_decoder", "reconstruction_loss", 0, ("vae",),
                              "vae/diffusion_pytorch_model.safetensors", {}),
    # from scratch: its posterior samples draw from torch's global generator, which is saved too
    "VAE": ("apt.toy.train_vae", "train_vae", "reconstruction_loss", 0, (), "vae/diffusion_pytorch_model.safetensors",
            {}),
    # captions from a numpy generator, dropout from torch's global one; the held-out probes call the loss once
    "text encoder": ("apt.toy.train_text", "train_text_encoder", "_loss_and_acc", 1, (),
                     "text_encoder/model.safetensors", {}),
    "alignment reward": ("apt.toy.train_reward", "train_reward", "contrastive_loss", 0, (), "model.safetensors", {}),
    "evaluator": ("apt.toy.train_evaluator", "train_evaluator", "classification_loss", 0, (), "model.safetensors",
                  dict(held_out=8, reader_clips=4)),
}


@pytest.mark.parametrize("build", BUILDS)
def test_a_crashed_build_resumes_bit_for_bit(build, tmp_path, monkeypatch):
    import importlib

    from safetensors.torch import load_file

    module_name, function, loss_name, calls_after, parts, weights, extra = BUILDS[build]
    module = importlib.import_module(module_name)
    train = getattr(module, function)
    for folder in ("straight", "crashed"):
        for part in parts:
            shutil.copytree(TOY_MODEL_DIR / part, tmp_path / folder / part)
    tiny = dict(steps=5, batch_size=2, save_every=2, **extra)
    train(tmp_path / "straight", **tiny)
    assert not list((tmp_path / "straight").glob(".*-build-state.pt"))  # a finished build leaves no state

    real_loss, calls = getattr(module, loss_name), []

    def crash_at_step_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("simulated crash")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(module, loss_name, crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "crashed", **tiny)
    (state,) = (tmp_path / "crashed").glob(".*-build-state.pt")
    assert torch.load(state, weights_only=True)["step"] == 2
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        train(tmp_path / "crashed", **{**tiny, "lr": 2e-4})  # every default is another
    resumed_calls = []
    monkeypatch.setattr(module, loss_name, lambda *a, **k: resumed_calls.append(1) or real_loss(*a, **k))
    train(tmp_path / "crashed", **tiny)
    assert len(resumed_calls) == 3 + calls_after  # steps 3 to 5: the first two were read back
    a, b = load_file(tmp_path / "straight" / weights), load_file(tmp_path / "crashed" / weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not state.exists()
