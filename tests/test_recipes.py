"""The small-cluster recipes (configs/recipes/): each loads, and the planner finds it within its GPUs' memory
with 10% headroom, with the figures its header states."""

import re
from pathlib import Path

import pytest

from apt.adversarial.config import APTConfig
from apt.core.config import load_config
from apt.planning.estimate import WAN_MODELS, WAN_VAES, Setup, estimate, seconds_per_update
from apt.planning.fit import budget_bytes

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "recipes").glob("apt-*.yaml"))


def plan_of(path: Path) -> Setup:
    """The planner's Setup of a recipe: model and GPU count from its name (apt-MODEL-RES-Ngpu.yaml), the rest
    from the config itself."""
    model, gpus = re.fullmatch(r"apt-(wan[\d.]+-[\d.]+b)-\d+p-(\d+)gpu", path.stem).groups()
    cfg = load_config(APTConfig, path)
    return Setup(model=WAN_MODELS[model], gpus=int(gpus), batch=cfg.train.global_batch_size,
                 micro_batch=cfg.train.micro_batch_size, frames=cfg.data.frames, height=cfg.data.height,
                 width=cfg.data.width, context_parallel=cfg.parallel.context_parallel,
                 activation_checkpointing=cfg.parallel.activation_checkpointing, lora_rank=cfg.model.lora.rank,
                 compute_bytes=2 if cfg.parallel.mixed_precision == "bf16" else 4)


def test_there_are_recipes_for_one_node_and_64_gpus_both_models_and_sizes():
    names = {p.stem for p in RECIPES}
    assert names == {f"apt-{m}-{r}-{g}gpu" for m in ("wan2.1-1.3b", "wan2.1-14b") for r in ("480p", "720p")
                     for g in (8, 64)}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_a_recipe_fits_80_gb_gpus_with_10_percent_headroom_as_its_header_says(path):
    r = estimate(plan_of(path))  # also checks that cp divides the GPUs, heads and tokens, and the batch splits
    assert r["total_bytes"] <= budget_bytes(80, 0.1)
    header = path.read_text()
    assert f"{r['total_bytes'] / 2**30:.1f} GiB per GPU of 72" in header
    assert f"{seconds_per_update(r, 0.4):,.0f} s per update at 40% MFU" in header
    assert "Departs from the paper:" in header


REWARD_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("wan*/reward.yaml"))
REWARD_MODEL_PARAMS = {"checkpoints/PickScore_v1": 0.99e9}  # CLIP ViT-H/14


@pytest.mark.parametrize("path", REWARD_CONFIGS, ids=lambda p: p.parent.name)
def test_a_wan_reward_config_scores_a_window_anywhere_in_the_clip_within_80_gb(path):
    """Every frame gets the reward over a run (a window at a random place), per frame, and the planner finds
    the config within 80 GB GPUs with 10% headroom on the 64 GPUs its header launches."""
    cfg = load_config(APTConfig, path)
    assert cfg.adv.reward_window >= 1 and not cfg.adv.reward_latent_frames
    assert all(r.per_frame and r.normalize for r in cfg.adv.rewards)
    nodes, per_node = map(int, re.search(r"--nnodes (\d+) --nproc_per_node (\d+)", path.read_text()).groups())
    model = path.parent.name
    setup = Setup(model=WAN_MODELS[model], stage="apt", gpus=nodes * per_node, batch=cfg.train.global_batch_size,
                  micro_batch=cfg.train.micro_batch_size, frames=cfg.data.frames, height=cfg.data.height,
                  width=cfg.data.width, context_parallel=cfg.parallel.context_parallel,
                  activation_checkpointing=cfg.parallel.activation_checkpointing,
                  vae_model=WAN_VAES[model][1], vae=dict(WAN_VAES[model][0]),
                  reward_latent_frames=cfg.adv.reward_window, reward_window=True,
                  reward_params=sum(REWARD_MODEL_PARAMS[r.path] for r in cfg.adv.rewards))
    r = estimate(setup)
    assert r["reward"] is not None and r["total_bytes"] <= budget_bytes(80, 0.1)
