"""The toy world: coloured handwritten digits moving across a black canvas.

Glyphs are scikit-learn's bundled 8x8 handwritten digits (real handwriting, no download).
Every clip is a pure function of (seed, index), so datasets are reproducible and a training
run can resume at an exact data position.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COLOURS = {
    "red": (1.0, 0.15, 0.15),
    "green": (0.15, 0.9, 0.15),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (1.0, 0.95, 0.1),
    "magenta": (1.0, 0.2, 1.0),
    "cyan": (0.1, 0.95, 1.0),
}
COLOUR_NAMES = tuple(COLOURS)
# (dx, dy) in screen coordinates: y grows downwards.
DIRECTIONS = {
    "up": (0, -1),
    "down": (0, 1),
    "left": (-1, 0),
    "right": (1, 0),
    "up and to the left": (-1, -1),
    "up and to the right": (1, -1),
    "down and to the left": (-1, 1),
    "down and to the right": (1, 1),
}
DIRECTION_NAMES = tuple(DIRECTIONS)
NUM_COMBOS = len(DIGIT_WORDS) * len(COLOUR_NAMES) * len(DIRECTION_NAMES)
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class ToyWorldConfig:
    size: int = 32  # canvas height = width, pixels
    frames: int = 9  # 4k+1 so the Wan VAE's 4x temporal compression divides it; 1 = image
    glyph_size: int = 16  # the 8x8 glyph is drawn at this many pixels
    speed: float = 1.5  # pixels per frame along each moving axis

    def __post_init__(self):
        if self.frames < 1 or (self.frames - 1) % 4:
            raise ValueError(f"toy world frames must be 4k+1 (1, 5, 9, ...), got {self.frames}")
        travel = self.speed * (self.frames - 1)
        if self.footprint + travel > self.size:
            raise ValueError(
                f"glyph footprint {self.footprint:.1f} + travel {travel:.1f} px does not fit the {self.size} px canvas"
            )

    @property
    def footprint(self) -> float:
        """Drawn extent of the glyph: bilinear sampling bleeds half a source texel past each edge."""
        return self.glyph_size * (1 + 1 / 8)


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip."""

    digit: int
    colour: int
    direction: int
    glyph: int  # index into sklearn's 1797 digits
    x0: float  # top-left of the glyph in the first frame, pixels
    y0: float

    @property
    def caption(self) -> str:
        return caption(self.digit, self.colour, self.direction)


def caption(digit: int, colour: int, direction: int | None) -> str:
    """'a red seven moving up and to the left'; images (direction None) have no motion."""
    text = f"a {COLOUR_NAMES[colour]} {DIGIT_WORDS[digit]}"
    return text if direction is None else f"{text} moving {DIRECTION_NAMES[direction]}"


def parse_caption(text: str) -> tuple[int, int, int | None]:
    """Inverse of `caption`; raises ValueError naming what it did not understand."""
    words = text.strip().lower().split(" ", 3)
    if len(words) < 3 or words[0] != "a":
        raise ValueError(f"not a toy-world caption: {text!r} (expected 'a <colour> <digit> [moving <direction>]')")
    if words[1] not in COLOURS:
        raise ValueError(f"unknown colour {words[1]!r} in {text!r}; known: {', '.join(COLOUR_NAMES)}")
    if words[2] not in DIGIT_WORDS:
        raise ValueError(f"unknown digit {words[2]!r} in {text!r}; known: {', '.join(DIGIT_WORDS)}")
    direction = None
    if len(words) == 4:
        rest = words[3]
        if not rest.startswith("moving ") or rest[len("moving ") :] not in DIRECTIONS:
            raise ValueError(f"unknown motion {rest!r} in {text!r}; known: moving {', '.join(DIRECTION_NAMES)}")
        direction = DIRECTION_NAMES.index(rest[len("moving ") :])
    return DIGIT_WORDS.index(words[2]), COLOUR_NAMES.index(words[1]), direction


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


def glyph_indices(split: str, digit: int) -> np.ndarray:
    """Glyphs of one digit in a split: every fifth sample is held out for evaluation."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _, targets = _digits()
    idx = np.nonzero(targets == digit)[0]
    held_out = idx % 5 == 0
    return idx[held_out] if split == "eval" else idx[~held_out]


@functools.lru_cache(maxsize=1)
def held_out_combos() -> frozenset[int]:
    """(digit, colour, direction) combinations never shown in training: 10% of all, fixed."""
    order = np.random.default_rng(20250116).permutation(NUM_COMBOS)
    return frozenset(int(c) for c in order[: NUM_COMBOS // 10])


def combo_id(digit: int, colour: int, direction: int) -> int:
    return (digit * len(COLOUR_NAMES) + colour) * len(DIRECTION_NAMES) + direction


def sample_spec(rng: np.random.Generator, split: str, world: ToyWorldConfig) -> ClipSpec:
    """Draw one clip. 'train' avoids held-out glyphs and combos; 'eval' uses only them."""
    held = held_out_combos()
    while True:
        digit = int(rng.integers(10))
        colour = int(rng.integers(len(COLOUR_NAMES)))
        direction = int(rng.integers(len(DIRECTION_NAMES)))
        if world.frames == 1 or (combo_id(digit, colour, direction) in held) == (split == "eval"):
            break
    glyphs = glyph_indices(split, digit)
    glyph = int(glyphs[rng.integers(len(glyphs))])
    return spec_with_random_position(rng, digit, colour, direction, glyph, world)


def spec_with_random_position(rng, digit, colour, direction, glyph, world: ToyWorldConfig) -> ClipSpec:
    """Place the glyph so its whole trajectory stays on the canvas."""
    dx, dy = DIRECTIONS[DIRECTION_NAMES[direction]]
    travel = world.speed * (world.frames - 1)
    bleed = (world.footprint - world.glyph_size) / 2
    room = world.size - world.footprint - travel
    x0 = bleed + float(rng.uniform(0, room)) + (travel if dx < 0 else 0.0)
    y0 = bleed + float(rng.uniform(0, room)) + (travel if dy < 0 else 0.0)
    return ClipSpec(digit, colour, direction, glyph, x0, y0)


def render(spec: ClipSpec, world: ToyWorldConfig) -> torch.Tensor:
    """Render a clip as a float tensor (3, frames, size, size) in [-1, 1]."""
    images, _ = _digits()
    glyph = torch.from_numpy(images[spec.glyph])[None, None]  # (1, 1, 8, 8)
    dx, dy = DIRECTIONS[DIRECTION_NAMES[spec.direction]]
    steps = torch.arange(world.frames, dtype=torch.float32) * world.speed
    left = spec.x0 + dx * steps  # (frames,)
    top = spec.y0 + dy * steps
    # Sample the glyph at every canvas pixel centre: bilinear, sub-pixel motion, zero outside.
    pix = torch.arange(world.size, dtype=torch.float32) + 0.5
    gx = (pix[None, :] - left[:, None]) / world.glyph_size * 2 - 1  # (frames, W)
    gy = (pix[None, :] - top[:, None]) / world.glyph_size * 2 - 1  # (frames, H)
    grid = torch.stack(
        [gx[:, None, :].expand(-1, world.size, -1), gy[:, :, None].expand(-1, -1, world.size)], dim=-1
    )
    alpha = F.grid_sample(
        glyph.expand(world.frames, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[:, 0]  # (frames, H, W)
    rgb = torch.tensor(COLOURS[COLOUR_NAMES[spec.colour]])[:, None, None, None]
    return (rgb * alpha[None]).clamp(0, 1) * 2 - 1


class MovingDigits(torch.utils.data.Dataset):
    """Map-style dataset: item i is the clip drawn from seed (seed, i). Deterministic and resumable.

    Returns dict(video=(3, F, H, W) in [-1, 1], caption=str, digit, colour, direction).
    """

    def __init__(self, split: str = "train", length: int = 100_000, seed: int = 0, world: ToyWorldConfig | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split, self.length, self.seed = split, length, seed
        self.world = world or ToyWorldConfig()

    def __len__(self) -> int:
        return self.length

    def spec(self, index: int) -> ClipSpec:
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        return sample_spec(rng, self.split, self.world)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        spec = self.spec(index)
        direction = None if self.world.frames == 1 else spec.direction
        return {
            "video": render(spec, self.world),
            "caption": caption(spec.digit, spec.colour, direction),
            "digit": spec.digit,
            "colour": spec.colour,
            "direction": spec.direction,
        }
