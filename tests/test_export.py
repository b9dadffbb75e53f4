import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from apt.cli.export import main as export_main
from apt.cli.generate import generate
from apt.core.config import ConfigError
from apt.core.files import sha256_file
from apt.inference.export import MANIFEST, export_checkpoint, verify_export
from apt.models.backbone import WanBackbone
from apt.training.run_folder import load_generator as load_generator_from_checkpoint

SIZE = ["--height", "16", "--width", "16", "--frames", "5"]
PROMPTS = ["a red seven moving up and to the left", "a blue two moving right"]


def test_export_writes_a_wan_pipeline_folder_holding_the_ema(tiny_run_dir, tiny_model_dir, tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    out = export_checkpoint(tiny_run_dir, tmp_path / "export", dtype="fp32")
    assert {p.name for p in out.iterdir()} == {"transformer", "vae", "text_encoder", "tokenizer", "scheduler",
                                              "model_index.json", MANIFEST}
    assert list(tmp_path.iterdir()) == [out]  # no temporary folder left
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "WanPipeline"
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["step"] == 3 and manifest["weights"] == "ema" and manifest["dtype"] == "fp32"
    assert manifest["recommended_call"]["num_inference_steps"] == 1
    assert manifest["recommended_call"]["guidance_scale"] == 1.0
    # one scheduler step: timestep 1000 (t = 1), sigma 1 -> 0, i.e. x0 = z - v(z, 1)
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(out / "scheduler")
    sched.set_timesteps(1)
    assert sched.timesteps.tolist() == [1000.0] and sched.sigmas.tolist() == [1.0, 0.0]
    z, v = torch.randn(1, 4, 2, 4, 4), torch.randn(1, 4, 2, 4, 4)
    assert torch.equal(sched.step(v, sched.timesteps[0], z).prev_sample, z - v)

    exported = WanBackbone.from_pretrained(out).state_dict()
    for name, expect_equal in (("ema", True), ("student", False)):
        ref = load_generator_from_checkpoint(tiny_run_dir, tiny_model_dir, name).backbone.state_dict()
        assert all(torch.equal(exported[k], ref[k]) for k in ref) == expect_equal
    teacher = WanBackbone.from_pretrained(tiny_model_dir).state_dict()
    assert not all(torch.equal(exported[k], teacher[k]) for k in teacher)


@pytest.mark.parametrize("dtype,tolerance", [("fp32", 1e-5), ("bf16", 3e-2)])
def test_wan_pipeline_loads_the_export_and_matches_generate_in_one_step(tiny_run_dir, tmp_path, dtype, tolerance):
    """diffusers' own WanPipeline on the exported folder vs our generate, same seeds, frames in [0, 1].
    fp32 agrees to float rounding (measured max |diff| 6.9e-7). bf16 (transformer, text encoder and VAE
    in bf16 on both sides) measured 1.6e-2: diffusers' scheduler step returns the latents in the model
    output's dtype, so WanPipeline rounds them to bf16 (ulp ~8e-3 at |x| ~ 2) while ours stay float32."""
    from diffusers import WanPipeline

    out = export_checkpoint(tiny_run_dir, tmp_path / "export", dtype=dtype)
    torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    pipe = WanPipeline.from_pretrained(out, dtype=torch_dtype)
    seed = 7
    theirs = pipe(PROMPTS, num_inference_steps=1, guidance_scale=1.0, height=16, width=16, num_frames=5,
                  generator=[torch.Generator().manual_seed(seed + i) for i in range(len(PROMPTS))],
                  max_sequence_length=32, output_type="pt").frames  # (B, F, 3, H, W) in [0, 1]
    args = [a for p in PROMPTS for a in ("--prompt", p)] + SIZE + ["--seed", str(seed), "--dtype", dtype,
                                                                   "--vae-dtype", dtype]
    ours = generate(["--model", str(out), "--out", str(tmp_path / "a")] + args).videos
    ours = (ours.permute(0, 2, 1, 3, 4) + 1) / 2
    assert theirs.shape == ours.shape == (2, 5, 3, 16, 16)
    diff = (theirs.float() - ours).abs().max().item()
    print(f"WanPipeline vs generate ({dtype}): max |diff| = {diff:.3g}")
    assert diff <= tolerance
    # the checkpoint itself, sampled by generate, gives the export's frames
    direct = generate(["--checkpoint", str(tiny_run_dir), "--out", str(tmp_path / "b")] + args).videos
    assert torch.equal((direct.permute(0, 2, 1, 3, 4) + 1) / 2, ours)


def test_verify_passes_and_catches_a_corrupted_export(tiny_run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    assert export_main(["--checkpoint", str(tiny_run_dir), "--out", str(out), "--dtype", "bf16", "--verify"]) == 0
    report = json.loads(capsys.readouterr().out)["verify"]
    assert report["ok"] and report["max_abs_diff_same_dtype"] == 0.0
    assert 0 < report["max_abs_diff_vs_fp32"] <= report["bf16_tolerance"]
    fp32 = export_checkpoint(tiny_run_dir, tmp_path / "fp32", dtype="fp32")
    assert verify_export(fp32)["max_abs_diff_same_dtype"] == 0.0
    weights = fp32 / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["proj_out.bias"] = state["proj_out.bias"] + 1e-3
    save_file(state, weights)
    with pytest.raises(ConfigError, match="diffusion_pytorch_model.safetensors is not the file that was exported"):
        verify_export(fp32)  # the recorded SHA-256 catches it first
    manifest = json.loads((fp32 / "seaweed_apt.json").read_text())
    manifest["sha256"]["transformer/diffusion_pytorch_model.safetensors"] = sha256_file(weights)
    (fp32 / "seaweed_apt.json").write_text(json.dumps(manifest))  # as if exported so: the latents still differ
    result = verify_export(fp32)
    assert not result["ok"] and result["max_abs_diff_same_dtype"] > 0


def test_export_rejects_bad_input_clearly(tiny_run_dir, tiny_model_dir, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_checkpoint(tmp_path / "nope", tmp_path / "e")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        export_checkpoint(tmp_path / "empty_run", tmp_path / "e")
    with pytest.raises(ValueError, match="no model 'generator'.*ema, student"):
        export_checkpoint(tiny_run_dir, tmp_path / "e", weights="generator")
    with pytest.raises(ValueError, match="unknown dtype 'fp16'"):
        export_checkpoint(tiny_run_dir, tmp_path / "e", dtype="fp16")
    with pytest.raises(FileNotFoundError, match="missing vae/"):
        (tmp_path / "half" / "transformer").mkdir(parents=True)
        export_checkpoint(tiny_run_dir, tmp_path / "e", model_dir=tmp_path / "half")
    (tmp_path / "taken").mkdir()
    with pytest.raises(SystemExit) as exit_status:
        export_main(["--checkpoint", str(tiny_run_dir), "--out", str(tmp_path / "taken")])
    assert exit_status.value.code == 2
    assert "exists" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
    with pytest.raises(FileNotFoundError, match="not a seaweed-apt export"):
        verify_export(tiny_model_dir)


def test_overwrite_replaces_only_an_earlier_export(tiny_run_dir, tiny_model_dir, tmp_path):
    """--overwrite deletes the folder it replaces: never the run, the teacher or a user's files."""
    run_files = sorted(p.relative_to(tiny_run_dir) for p in tiny_run_dir.rglob("*"))
    teacher_files = sorted(p.relative_to(tiny_model_dir) for p in tiny_model_dir.rglob("*"))
    step_dir = next((tiny_run_dir / "checkpoints").glob("step_*"))
    for out in (tiny_run_dir, step_dir, tiny_run_dir / "exports" / "e", tiny_model_dir, tiny_model_dir.parent):
        with pytest.raises(FileExistsError, match="is, contains or lies inside"):
            export_checkpoint(tiny_run_dir, out, overwrite=True)
    assert sorted(p.relative_to(tiny_run_dir) for p in tiny_run_dir.rglob("*")) == run_files
    assert sorted(p.relative_to(tiny_model_dir) for p in tiny_model_dir.rglob("*")) == teacher_files

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier export"):
        export_checkpoint(tiny_run_dir, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"

    out = export_checkpoint(tiny_run_dir, tmp_path / "export", dtype="fp32")
    assert export_checkpoint(tiny_run_dir, out, dtype="fp32", overwrite=True) == out  # an export: replaced
    (out / "notes.txt").write_text("keep me too")
    with pytest.raises(FileExistsError, match="notes.txt"):
        export_checkpoint(tiny_run_dir, out, dtype="fp32", overwrite=True)
    assert (out / "notes.txt").exists()


def test_an_export_travels_where_a_checkpoint_does(tiny_run_dir, tiny_model_dir, tmp_path):
    """Weights from elsewhere come as an export (safetensors: nothing is unpickled): evaluate, generate's
    loader and stage 2's adv.generator_init take one and get the checkpoint's generator."""
    from apt.adversarial.build import check_inputs, initial_generator
    from apt.adversarial.config import APTConfig
    from apt.core.config import load_config

    out = export_checkpoint(tiny_run_dir, tmp_path / "export", dtype="fp32")
    ref = load_generator_from_checkpoint(tiny_run_dir, tiny_model_dir).backbone.state_dict()
    via_export = load_generator_from_checkpoint(out).backbone.state_dict()
    assert set(via_export) == set(ref) and all(torch.equal(via_export[k], ref[k]) for k in ref)
    check_inputs(load_config(APTConfig, None, [f"adv.generator_init={out}"]))
    teacher = WanBackbone.from_pretrained(tiny_model_dir)
    init = initial_generator(str(out), teacher).state_dict()
    assert all(torch.equal(init[k], ref[k]) for k in ref)


def test_raw_weights_are_the_trained_model_behind_the_ema(tiny_run_dir, tiny_model_dir, tmp_path):
    """name='raw' (apt-evaluate --raw) loads stage 1's student (stage 2's generator where a checkpoint
    holds one), not its EMA; an export holds one set of weights, so it refuses, naming why."""
    from tiny import write_tiny_run

    raw = load_generator_from_checkpoint(tiny_run_dir, tiny_model_dir, "raw").backbone.state_dict()
    student = load_generator_from_checkpoint(tiny_run_dir, tiny_model_dir, "student").backbone.state_dict()
    ema = load_generator_from_checkpoint(tiny_run_dir, tiny_model_dir).backbone.state_dict()
    assert all(torch.equal(raw[k], student[k]) for k in student)
    assert not all(torch.equal(raw[k], ema[k]) for k in ema)
    stage2 = tmp_path / "stage2"
    write_tiny_run(stage2, tiny_model_dir, names=("ema", "generator", "discriminator"), seed=1)
    raw = load_generator_from_checkpoint(stage2, tiny_model_dir, "raw").backbone.state_dict()
    generator = load_generator_from_checkpoint(stage2, tiny_model_dir, "generator").backbone.state_dict()
    assert all(torch.equal(raw[k], generator[k]) for k in generator)
    out = export_checkpoint(tiny_run_dir, tmp_path / "export", dtype="fp32")
    with pytest.raises(ValueError, match="is an export"):
        load_generator_from_checkpoint(out, None, "raw")
