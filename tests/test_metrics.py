import pytest
import torch
import torch.nn.functional as F

from apt.core.video_metrics import sharpness, sharpness_ratio


def _blur(videos: torch.Tensor) -> torch.Tensor:
    b, c, f, h, w = videos.shape
    frames = videos.permute(0, 2, 1, 3, 4).reshape(-1, 1, h, w)
    blurred = F.avg_pool2d(F.pad(frames, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return blurred.view(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def test_sharpness_blur_scores_lower_and_ratio_to_itself_is_one():
    videos = torch.rand(4, 3, 5, 16, 16) * 2 - 1
    videos[:, :, :, 4:10, 4:10] = 1.0  # an edge as well as noise
    blurred = _blur(videos)
    assert sharpness(blurred) < 0.5 * sharpness(videos)
    assert sharpness_ratio(videos, videos) == pytest.approx(1.0)
    assert sharpness_ratio(blurred, videos) < 1.0
    assert sharpness(torch.zeros(2, 3, 3, 8, 8)) == 0.0


def test_sharpness_rejects_wrong_shapes_and_flat_references():
    with pytest.raises(ValueError):
        sharpness(torch.zeros(3, 5, 16, 16))
    with pytest.raises(ValueError):
        sharpness_ratio(torch.rand(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 8))


def test_frechet_distance_zero_for_same_set_and_grows_with_shift():
    from apt.core.video_metrics import frechet_distance, gaussian_stats

    feats = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)) @ torch.randn(16, 16)
    mu, cov = gaussian_stats(feats)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-6
    distances = [frechet_distance(*gaussian_stats(feats + s), mu, cov) for s in (0.5, 1.0, 2.0)]
    # a pure mean shift by s in every dimension adds exactly 16 s^2
    assert distances == pytest.approx([16 * 0.25, 16.0, 64.0], rel=1e-6)
    wider = frechet_distance(*gaussian_stats(feats * 2), mu, cov)
    assert wider > 1.0
    # rank-deficient covariances (fewer samples than dimensions) still give a finite, non-negative number
    few = gaussian_stats(feats[:5])
    assert 0 <= frechet_distance(*few, mu, cov) < float("inf")


def test_evaluator_scores_real_held_out_clips():
    from apt.toy.evaluator import load_evaluator, score_clips
    from apt.toy.train_evaluator import clips_and_labels

    videos, labels = clips_and_labels("eval", 48, seed=5)
    preds, feats = score_clips(videos, load_evaluator())
    assert feats.shape == (48, load_evaluator().config["feature_dim"])
    for k in ("digit", "colour", "direction"):
        assert (preds[k] == labels[k]).float().mean() > 0.85, k
    # scores do not depend on the batch a clip is in (GroupNorm, eval mode)
    alone, _ = score_clips(videos[:3], batch_size=1)
    assert all(torch.equal(alone[k], preds[k][:3]) for k in preds)


def test_evaluate_videos_real_clips_against_wrong_requests():
    from apt.toy.evaluation import check_prompts, evaluate_videos, real_clips

    requests = check_prompts(24, seed=3, held_out=True)
    real = real_clips(requests, seed=0)
    good = evaluate_videos(real, requests)
    assert good["all"] > 0.8 and good["n"] == 24
    assert 0.7 < good["sharpness_ratio"] < 1.3
    wrong = [dict(r, colour=(r["colour"] + 1) % 6) for r in requests]
    assert evaluate_videos(real, wrong)["colour"] < 0.2
    blurred = evaluate_videos(_blur(_blur(real)), requests)
    assert blurred["sharpness_ratio"] < 0.5 * good["sharpness_ratio"]
    assert blurred["frechet_distance"] > good["frechet_distance"]


def _disc(radius: float, edge_width: float, size: int = 32) -> torch.Tensor:
    """A bright disc on a dark background with a soft edge of about edge_width pixels, as (1, 3, 2, H, W)."""
    yy, xx = torch.meshgrid(torch.arange(size) - size / 2 + 0.5, torch.arange(size) - size / 2 + 0.5, indexing="ij")
    inside = torch.sigmoid((radius - (xx ** 2 + yy ** 2).sqrt()) / edge_width)
    return (2 * inside - 1).expand(1, 3, 2, size, size).clone()


def test_edge_sharpness_measures_edge_width_not_the_amount_of_ink():
    from apt.core.video_metrics import edge_sharpness

    sharp_small, blurry_big = _disc(4, 0.4), _disc(12, 0.5)
    # Laplacian energy ranks the big, slightly blurrier disc first (three times the edge length) ...
    assert sharpness(blurry_big) > 1.5 * sharpness(sharp_small)
    # ... edge sharpness ranks by edge width
    assert edge_sharpness(sharp_small) > 1.4 * edge_sharpness(blurry_big)
    # at one edge width, three times the radius: Laplacian energy x2.5, edge sharpness within 25%
    assert sharpness(_disc(12, 0.8)) > 2 * sharpness(_disc(4, 0.8))
    assert edge_sharpness(_disc(12, 0.8)) == pytest.approx(edge_sharpness(_disc(4, 0.8)), rel=0.25)
    # blur lowers it; contrast does not change it
    assert edge_sharpness(_blur(sharp_small)) < 0.6 * edge_sharpness(sharp_small)
    assert edge_sharpness(0.5 * sharp_small) == pytest.approx(edge_sharpness(sharp_small), rel=1e-5)
    with pytest.raises(ValueError, match="flat"):
        edge_sharpness(torch.zeros(1, 3, 2, 8, 8))


def _fatten(videos: torch.Tensor) -> torch.Tensor:
    """Thicker strokes, edges as steep as before: a 3x3 grey-level dilation of every frame."""
    b, c, f, h, w = videos.shape
    frames = videos.permute(0, 2, 1, 3, 4).reshape(-1, 1, h, w)
    return F.max_pool2d(frames, 3, stride=1, padding=1).view(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def test_edge_steepness_separates_edge_width_from_stroke_width():
    from apt.core.video_metrics import edge_sharpness, edge_steepness
    from apt.toy.world import MovingDigits

    data = MovingDigits("eval", 64, seed=3)
    real = torch.stack([data[i]["video"] for i in range(len(data))])
    fat, blurred = _fatten(real), _blur(real)
    # fattening real strokes (no blur) lowers the edge sharpness ratio a lot, the steepness hardly at all
    assert edge_sharpness(fat) < 0.9 * edge_sharpness(real)
    assert edge_steepness(fat) == pytest.approx(edge_steepness(real), rel=0.04)
    # blur lowers the steepness; so does blurring fat strokes, against fat strokes
    assert edge_steepness(blurred) < 0.85 * edge_steepness(real)
    assert edge_steepness(_blur(fat)) < 0.85 * edge_steepness(fat)
    # a soft disc edge: about 0.8 / width (a sigmoid edge of scale s spans about 4.4 s from 10% to 90%)
    assert edge_steepness(_disc(10, 1.0)) == pytest.approx(0.8 / 4.4, rel=0.25)
    assert edge_steepness(0.5 * (_disc(10, 1.0) + 1) - 1) == pytest.approx(edge_steepness(_disc(10, 1.0)), rel=1e-5)
    with pytest.raises(ValueError, match="dark"):
        edge_steepness(-torch.ones(1, 3, 2, 8, 8))


def test_same_digit_in_every_frame_is_high_for_real_clips_and_low_for_a_changing_digit():
    from apt.toy.attributes import digit_by_frame, frame_digits, same_digit_in_every_frame
    from apt.toy.world import MovingDigits

    data = MovingDigits("eval", 60, seed=9)
    real = torch.stack([data[i]["video"] for i in range(len(data))])
    assert same_digit_in_every_frame(real) >= 0.95
    # the same clips with the first four frames taken from a clip of another digit
    digits = [data[i]["digit"] for i in range(len(data))]
    other = [next(j for j in range(len(data)) if digits[j] != digits[i]) for i in range(len(data))]
    mixed = real.clone()
    mixed[:, :, :4] = real[other][:, :, :4]
    assert same_digit_in_every_frame(mixed) <= 0.2
    # where the digit is lost: the first four frames, not the rest
    by_frame = digit_by_frame(frame_digits(mixed), digits)
    assert max(by_frame[:4]) <= 0.2 and min(by_frame[4:]) >= 0.9


def test_paired_same_digit_difference_against_the_teacher():
    import numpy as np

    from apt.toy.attributes import paired_same_digit_difference
    from apt.toy.evaluation import add_paired_same_digit

    steady, changing = np.array([[3, 3, 3]] * 4), np.array([[3, 5, 3]] * 4)
    teacher = np.concatenate([steady[:2], changing[:2]])  # same digit in clips 0 and 1
    model = np.concatenate([steady[:3], changing[:1]])  # ... and in clip 2 as well
    diff, se = paired_same_digit_difference(model, teacher)
    assert diff == pytest.approx(0.25)
    assert se == pytest.approx(np.std([0, 0, 1, 0], ddof=1) / 2)
    assert paired_same_digit_difference(teacher, teacher) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same number"):
        paired_same_digit_difference(model[:3], teacher)
    results = {"teacher 25-step": {}, "APT 1-step": {}}
    add_paired_same_digit(results, {"teacher 25-step": teacher, "APT 1-step": model}, "teacher 25-step")
    assert results == {"teacher 25-step": {},
                       "APT 1-step": {"same_digit_minus_teacher": 0.25, "same_digit_minus_teacher_se": round(se, 4)}}
    add_paired_same_digit(results, {"APT 1-step": model}, None)  # no teacher evaluated: nothing to pair with
