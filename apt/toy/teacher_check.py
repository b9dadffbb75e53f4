"""Does the toy teacher draw what it is asked? Sample prompts, read attributes back, report fractions."""

from __future__ import annotations

import numpy as np
from apt.data.toy import COLOUR_NAMES, DIRECTION_NAMES, caption, combo_id, held_out_combos
from apt.loading import load_components
from apt.pipeline import SampleConfig, Sampler
from apt.toy.attributes import attribute_accuracy


def check_prompts(n: int, seed: int = 0, held_out: bool = False) -> list[dict]:
    """n (digit, colour, direction) requests: training combos, or only held-out ones."""
    rng, held, out = np.random.default_rng(seed), held_out_combos(), []
    while len(out) < n:
        d, c, m = int(rng.integers(10)), int(rng.integers(len(COLOUR_NAMES))), int(rng.integers(len(DIRECTION_NAMES)))
        if (combo_id(d, c, m) in held) == held_out:
            out.append({"digit": d, "colour": c, "direction": m, "caption": caption(d, c, m)})
    return out


def check_teacher(model_dir, n: int = 48, seed: int = 0, held_out: bool = False, cfg: SampleConfig | None = None,
                  batch_size: int = 16):
    """Returns (accuracy dict, videos, requests)."""
    cfg = cfg or SampleConfig()
    sampler = Sampler(load_components(model_dir))
    requests = check_prompts(n, seed, held_out)
    videos = sampler.generate([r["caption"] for r in requests], cfg, batch_size=batch_size)
    return attribute_accuracy(videos, requests), videos, requests
