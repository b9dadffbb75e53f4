"""The teacher's samples in place of a fraction of the toy world's clips (data.teacher_fraction)."""

from pathlib import Path

import pytest
import torch

from apt.core.config import ConfigError
from apt.core.sampling import SamplingParams
from apt.inference.sampler import Sampler
from apt.models.loading import load_components
from apt.toy.data import TEACHER_NOISE_SEED, teacher_clip_choice, toy_training_dataset
from apt.training.config import DataConfig
from apt.training.distributed import DistInfo

ROOT = Path(__file__).resolve().parents[1]
ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")


@pytest.fixture(scope="module")
def comps(tiny_model_dir):
    return load_components(tiny_model_dir)


def teacher_sample(comps, caption: str, clip: int, steps: int, guidance: float) -> torch.Tensor:
    """The sampling path's own sample for one caption, from clip `clip`'s noise seed."""
    params = SamplingParams(steps=steps, guidance_scale=guidance, seed=TEACHER_NOISE_SEED + clip)
    return Sampler(comps).generate([caption], params, decode=False)[0]


def test_the_choice_of_clips_is_fixed_by_the_seed_and_fraction():
    assert len(teacher_clip_choice(50, 0.0, 0)) == 0 and len(teacher_clip_choice(50, 1.0, 0)) == 50
    half = teacher_clip_choice(2000, 0.5, 0)
    assert torch.equal(half, teacher_clip_choice(2000, 0.5, 0)) and 900 < len(half) < 1100
    assert not torch.equal(half, teacher_clip_choice(2000, 0.5, 1))
    assert set(teacher_clip_choice(2000, 0.25, 0).tolist()) <= set(half.tolist())  # nested as the fraction grows


def test_chosen_clips_hold_the_teachers_samples_for_their_captions(comps, tiny_model_dir, tmp_path):
    cfg = DataConfig(num_clips=6, cache_dir=str(tmp_path), teacher_fraction=0.5, teacher_steps=3,
                     teacher_guidance=4.0)
    data = toy_training_dataset(cfg, comps, tiny_model_dir, ONE)
    plain = toy_training_dataset(DataConfig(num_clips=6, cache_dir=str(tmp_path)), comps, tiny_model_dir, ONE)
    chosen = teacher_clip_choice(6, 0.5, 0).tolist()
    assert 0 < len(chosen) < 6 and data.captions == plain.captions and torch.equal(data.rows, plain.rows)
    for i in range(6):
        if i in chosen:  # batched over the chosen clips, yet each equal to its own one-clip sample
            want = teacher_sample(comps, data.captions[i], i, 3, 4.0)
            torch.testing.assert_close(data.latents[i], want, rtol=0, atol=1e-5)
        else:
            assert torch.equal(data.latents[i], plain.latents[i])
    # drawn once: a second run reads the cache (no teacher needed); other steps are another cache
    again = toy_training_dataset(cfg, load_components(tiny_model_dir, parts=("vae", "text_encoder", "tokenizer")),
                                 tiny_model_dir, ONE)
    assert torch.equal(again.latents, data.latents)
    assert len(list(tmp_path.glob("toy-teacher-*.safetensors"))) == 1
    assert not list(tmp_path.glob("*.parts"))  # the batches kept against a crash go once the whole is written
    other = toy_training_dataset(DataConfig(num_clips=6, cache_dir=str(tmp_path), teacher_fraction=0.5,
                                            teacher_steps=2, teacher_guidance=4.0), comps, tiny_model_dir, ONE)
    assert not torch.allclose(other.latents[chosen], data.latents[chosen])
    assert len(list(tmp_path.glob("toy-teacher-*.safetensors"))) == 2


def test_a_crash_while_drawing_loses_only_the_batch_in_progress(tmp_path):
    from apt.toy.data import _split_over_ranks

    calls = []

    def work(start, stop):
        calls.append(start)
        if len(calls) == 3 and crash:
            raise KeyboardInterrupt
        return torch.arange(start, stop, dtype=torch.float32).view(-1, 1) * 2

    crash = True
    with pytest.raises(KeyboardInterrupt):
        _split_over_ranks(10, work, 0, 1, 3, "test", False, torch.zeros(0, 1), tmp_path / "parts")
    assert calls == [0, 3, 6] and len(list((tmp_path / "parts").glob("*.safetensors"))) == 2
    crash, calls[:] = False, []
    out = _split_over_ranks(10, work, 0, 1, 3, "test", False, torch.zeros(0, 1), tmp_path / "parts")
    assert calls == [6, 9]  # the two finished batches are read back
    assert torch.equal(out, torch.arange(10, dtype=torch.float32).view(-1, 1) * 2)
    calls[:] = []
    other = _split_over_ranks(10, work, 0, 1, 4, "test", False, torch.zeros(0, 1), tmp_path / "parts")
    assert calls == [0, 4, 8] and torch.equal(other, out)  # batches of another size are not mistaken for them


def test_teacher_options_are_checked():
    for bad in (dict(teacher_fraction=1.5), dict(teacher_fraction=-0.1), dict(teacher_fraction=0.5, teacher_steps=0)):
        with pytest.raises(ConfigError, match="teacher_fraction must be in"):
            DataConfig(**bad).validate()
    with pytest.raises(ConfigError, match="shard set"):
        DataConfig(source="shards", path="x", teacher_fraction=0.5).validate()


@pytest.mark.slow
def test_two_ranks_sample_a_share_each_and_get_what_one_process_gets(comps, tiny_model_dir, tmp_path):
    """Stage 2 under torchrun on 2 ranks with data.teacher_fraction=1: 7 clips split 3 / 4, gathered, cached."""
    from safetensors.torch import load_file
    from tiny import run_training_script

    run_training_script(ROOT / "scripts" / "train_apt.py", ROOT / "configs" / "toy" / "apt.yaml",
                        [f"model.path={tiny_model_dir}", "adv.generator_init=teacher", "data.num_clips=7",
                         "data.teacher_fraction=1", "data.teacher_steps=2", "train.micro_batch_size=2",
                         "train.global_batch_size=0", "train.steps=1", "train.sample_every=0",
                         f"train.out_dir={tmp_path / 'run'}"], tmp_path)
    (cached,) = (tmp_path / "cache").glob("toy-teacher-*.safetensors")
    latents = load_file(str(cached))["latents"]
    plain = toy_training_dataset(DataConfig(num_clips=7, cache_dir=str(tmp_path / "cache")), comps, tiny_model_dir,
                                 ONE)
    assert latents.shape == plain.latents.shape
    for i in range(7):  # one thread per rank there, several here: float sums differ in the last bits
        want = teacher_sample(comps, plain.captions[i], i, 2, 5.0)
        torch.testing.assert_close(latents[i], want, rtol=0, atol=1e-4)
