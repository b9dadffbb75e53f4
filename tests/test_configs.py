"""Every shipped YAML loads against its schema; the Wan configs carry the paper's hyper-parameters, each
model's file holding only what differs from its stage's base (configs/base/)."""

from pathlib import Path

import pytest

from apt.adversarial.config import APTConfig
from apt.cli.generate import GenerateConfig
from apt.cli.preprocess import PreprocessConfig
from apt.core.config import load_config
from apt.models.backbone import default_taps
from distill.config import DistillConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS = {"distill": DistillConfig, "apt": APTConfig, "reward": APTConfig, "generate": GenerateConfig,
           "preprocess": PreprocessConfig}


def _schema(path: Path):
    return SCHEMAS[path.stem.split("-")[0]]


SHIPPED = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "base")  # a base is a part, not a config


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_loads_against_its_schema(path):
    assert path.stem.split("-")[0] in SCHEMAS, f"{path}: no schema for this config name"
    # preprocess configs leave the video folder to the command line
    load_config(_schema(path), path, ["videos=data/clips"] if _schema(path) is PreprocessConfig else [])


WAN = [("wan2.1-1.3b", 30, 720), ("wan2.1-14b", 40, 720), ("wan2.2-ti2v-5b", 30, 704)]  # (configs, depth, height)


@pytest.mark.parametrize("model,blocks,height", WAN)
def test_wan_configs_have_the_paper_hyperparameters(model, blocks, height):
    image = load_config(APTConfig, CONFIGS / model / "apt-image.yaml")
    video = load_config(APTConfig, CONFIGS / model / "apt-video.yaml")
    distill = load_config(DistillConfig, CONFIGS / model / "distill.yaml")
    for cfg in (image, video, distill):
        assert cfg.parallel.mixed_precision == "bf16" and cfg.parallel.activation_checkpointing
        assert cfg.data.source == "shards" and (cfg.data.height, cfg.data.width, cfg.data.fps) == (height, 1280, 24)
        assert cfg.model.path.endswith("-Diffusers") and model.split("-")[0].replace("wan", "Wan") in cfg.model.path
    assert distill.cd.guidance_scale == 7.5 and distill.data.frames == 49
    assert image.data.frames == 1 and video.data.frames == 49
    for cfg, lr, steps, shift, sigma in ((image, 5e-6, 350, 1.0, 0.01), (video, 3e-6, 300, 12.0, 0.1)):
        adv = cfg.adv
        assert adv.lr_generator == adv.lr_discriminator == lr and cfg.train.steps == steps
        assert (adv.d_shift, adv.r1_sigma, adv.r1_weight, adv.ema_decay, adv.beta2) == (shift, sigma, 100, 0.995, 0.9)
        assert adv.optimizer == "adam" and adv.r1_every == 1
        assert tuple(adv.taps) == default_taps(blocks)
    assert image.adv.generator_init == distill.train.out_dir
    assert video.adv.generator_init == image.train.out_dir
    assert video.train.global_batch_size == 2048  # the paper's video batch, whatever the GPU count
    assert video.train.grad_accum(2048 // video.train.micro_batch_size) == 1


@pytest.mark.parametrize("model", [model for model, _, _ in WAN])
def test_preprocess_configs_write_the_sets_the_training_configs_read(model):
    for kind, training in (("video", "apt-video"), ("image", "apt-image")):
        pre = load_config(PreprocessConfig, CONFIGS / model / f"preprocess-{kind}.yaml", ["videos=x"])
        train = load_config(APTConfig, CONFIGS / model / f"{training}.yaml")
        assert pre.out == train.data.path and pre.model == train.model.path
        assert (pre.frames, pre.height, pre.width, pre.fps) == (train.data.frames, train.data.height,
                                                                 train.data.width, train.data.fps)


def test_a_config_merges_over_its_base_and_names_the_file_of_a_bad_key(tmp_path, capsys):
    """`base:` files merge first (paths relative to the file, chains allowed); the file's own keys win;
    a key the schema lacks names the file it is in; --print-config shows the merged result."""
    from apt.cli.distill import main
    from apt.core.config import ConfigError

    (tmp_path / "stage.yaml").write_text("train:\n  steps: 7\n  seed: 3\ncd:\n  lr: 0.5\n")
    (tmp_path / "mid.yaml").write_text("base: stage.yaml\ntrain:\n  seed: 4\n")
    (tmp_path / "model.yaml").write_text("base: [mid.yaml]\ntrain:\n  out_dir: runs/x\n")
    cfg = load_config(DistillConfig, tmp_path / "model.yaml", ["cd.lr=0.25"])
    assert (cfg.train.steps, cfg.train.seed, cfg.train.out_dir, cfg.cd.lr) == (7, 4, "runs/x", 0.25)
    (tmp_path / "stage.yaml").write_text("train:\n  stepz: 7\n")
    with pytest.raises(ConfigError, match="stage.yaml: train.stepz"):
        load_config(DistillConfig, tmp_path / "model.yaml")
    (tmp_path / "stage.yaml").write_text("base: model.yaml\n")
    with pytest.raises(ConfigError, match="comes back to itself"):
        load_config(DistillConfig, tmp_path / "model.yaml")
    with pytest.raises(SystemExit) as done:
        main(["--config", str(CONFIGS / "wan2.1-14b" / "distill.yaml"), "--print-config", "train.steps=5"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "guidance_scale: 7.5" in printed and "steps: 5" in printed and "Wan2.1-T2V-14B-Diffusers" in printed


@pytest.mark.parametrize("model", [model for model, _, _ in WAN])
def test_wan_model_files_hold_only_what_differs_from_their_base(model):
    """No key of a model's file repeats its base's value (what they share lives in configs/base/ once)."""
    from omegaconf import OmegaConf

    from apt.core.config import flatten, yaml_chain

    for path in sorted((CONFIGS / model).glob("*.yaml")):
        *bases, (_, own) = yaml_chain(path)
        assert bases, f"{path} names no base"
        inherited = {}
        for _, node in bases:
            inherited.update(flatten(OmegaConf.to_container(node)))
        repeated = {k: v for k, v in flatten(OmegaConf.to_container(own)).items() if inherited.get(k, object()) == v}
        assert not repeated, f"{path} repeats its base: {repeated}"
