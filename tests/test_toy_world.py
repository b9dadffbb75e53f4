import numpy as np
import pytest
import torch

from apt.toy import world as toy
from apt.toy.world import MovingDigits, ToyWorldConfig


def test_clips_are_deterministic_by_seed_and_index():
    a, b = MovingDigits("train", 10, seed=3), MovingDigits("train", 10, seed=3)
    for i in (0, 7):
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["caption"] == b[i]["caption"]
    assert not torch.equal(a[0]["video"], a[1]["video"])
    assert not torch.equal(a[0]["video"], MovingDigits("train", 10, seed=4)[0]["video"])


def test_clip_shape_range_and_frames_rule():
    item = MovingDigits("train", 1)[0]
    assert item["video"].shape == (3, 9, 32, 32)
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert MovingDigits("train", 1, world=ToyWorldConfig(frames=1))[0]["video"].shape == (3, 1, 32, 32)
    with pytest.raises(ValueError, match="4k\\+1"):
        ToyWorldConfig(frames=8)
    with pytest.raises(ValueError, match="fit"):
        ToyWorldConfig(size=16)


def test_held_out_glyphs_and_combos():
    for d in range(10):
        train, held = set(toy.glyph_indices("train", d)), set(toy.glyph_indices("eval", d))
        assert train and held and not train & held
    held_combos = toy.held_out_combos()
    assert len(held_combos) == toy.NUM_COMBOS // 10
    ev, tr = MovingDigits("eval", 40, seed=1), MovingDigits("train", 40, seed=1)
    for i in range(40):
        s = ev.spec(i)
        assert toy.combo_id(s.digit, s.colour, s.direction) in held_combos
        assert s.glyph in set(toy.glyph_indices("eval", s.digit))
        s = tr.spec(i)
        assert toy.combo_id(s.digit, s.colour, s.direction) not in held_combos
        assert s.glyph in set(toy.glyph_indices("train", s.digit))


def test_captions_round_trip_and_bad_captions():
    for d, c, m in [(7, 0, 4), (0, 5, 1), (3, 2, None)]:
        assert toy.parse_caption(toy.caption(d, c, m)) == (d, c, m)
    assert toy.caption(7, 0, 4) == "a red seven moving up and to the left"
    with pytest.raises(ValueError, match="colour"):
        toy.parse_caption("a purple seven")
    with pytest.raises(ValueError, match="motion"):
        toy.parse_caption("a red seven moving sideways")


@pytest.mark.parametrize("direction", range(8))
def test_motion_and_colour_are_what_the_caption_says(direction):
    world = ToyWorldConfig()
    spec = toy.spec_with_random_position(np.random.default_rng(direction), 4, direction % 6, direction, 4, world)
    video = toy.render(spec, world)
    inten = (video + 1).amax(0)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cx = [(f * xs).sum() / f.sum() for f in inten]
    cy = [(f * ys).sum() / f.sum() for f in inten]
    dx, dy = toy.DIRECTIONS[toy.DIRECTION_NAMES[direction]]
    travel = world.speed * (world.frames - 1)
    assert float(cx[-1] - cx[0]) == pytest.approx(dx * travel, abs=0.5)
    assert float(cy[-1] - cy[0]) == pytest.approx(dy * travel, abs=0.5)
    # the glyph never leaves the canvas: total brightness is constant over frames
    mass = inten.sum((1, 2))
    assert torch.allclose(mass, mass[0].expand_as(mass), rtol=1e-3)
    rgb = ((video + 1) / 2).amax((1, 2, 3))
    want = torch.tensor(toy.COLOURS[toy.COLOUR_NAMES[spec.colour]])
    assert torch.allclose(rgb / rgb.max(), want / want.max(), atol=0.05)
