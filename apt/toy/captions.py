"""Random toy captions with their attribute labels (for training the text encoder)."""

from __future__ import annotations

import numpy as np

from apt.toy.world import COLOUR_NAMES, DIRECTION_NAMES, caption, combo_id, held_out_combos

NO_DIRECTION = len(DIRECTION_NAMES)  # label of an image caption (no motion)


def random_captions(rng: np.random.Generator, n: int, image_fraction: float = 0.2, split: str = "train"):
    """n captions and labels (digit, colour, direction-or-NO_DIRECTION); 'train' avoids held-out combos."""
    held = held_out_combos()
    texts, labels = [], []
    while len(texts) < n:
        d, c, m = int(rng.integers(10)), int(rng.integers(len(COLOUR_NAMES))), int(rng.integers(len(DIRECTION_NAMES)))
        if rng.random() < image_fraction:
            texts.append(caption(d, c, None))
            labels.append((d, c, NO_DIRECTION))
        elif (combo_id(d, c, m) in held) == (split == "eval"):
            texts.append(caption(d, c, m))
            labels.append((d, c, m))
    return texts, np.array(labels, dtype=np.int64)
