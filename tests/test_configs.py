"""Every shipped YAML loads against its schema; the Wan configs carry the paper's hyper-parameters."""

from pathlib import Path

import pytest

from apt.adversarial.config import APTConfig
from apt.backbone import default_taps
from apt.cli.generate import GenerateConfig
from apt.cli.preprocess import PreprocessConfig
from apt.config import load_config
from distill.config import DistillConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS = {"distill": DistillConfig, "apt": APTConfig, "reward": APTConfig, "generate": GenerateConfig,
           "preprocess": PreprocessConfig}


def _schema(path: Path):
    return SCHEMAS[path.stem.split("-")[0]]


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
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
