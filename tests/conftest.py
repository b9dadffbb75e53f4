import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random diffusers-layout Wan folder of the real classes, tiny widths."""
    from tiny import build_tiny_wan_folder

    return build_tiny_wan_folder(tmp_path_factory.mktemp("tiny-wan"))


@pytest.fixture(scope="session")
def tiny_run_dir(tiny_model_dir, tmp_path_factory):
    """A stage-1-like run folder over tiny_model_dir: config.yaml and one checkpoint ('ema', 'student')."""
    from tiny import write_tiny_run

    run_dir = tmp_path_factory.mktemp("tiny-run")
    write_tiny_run(run_dir, tiny_model_dir)
    return run_dir


def pytest_collection_modifyitems(config, items):
    """Slow end-to-end tests first: under pytest-xdist they then start while the quick ones fill the
    other worker, instead of one of them running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most 4. Each worker holds torch, diffusers and its session's tiny
    models (about 1 GiB), and several tests start two-rank torchrun jobs of their own."""
    return max(1, min(4, os.cpu_count() or 1))
