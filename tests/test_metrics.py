import pytest
import torch
import torch.nn.functional as F

from apt.metrics import sharpness, sharpness_ratio


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
