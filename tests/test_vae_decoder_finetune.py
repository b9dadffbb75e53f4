"""scripts/build_toy.py --component vae-decoder: the toy VAE's decoder trained further, its latent space kept."""

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
