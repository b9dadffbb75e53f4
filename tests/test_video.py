import numpy as np
import torch

from apt.core.video import frame_grid, read_mp4, to_uint8_frames, write_mp4


def test_mp4_round_trip_and_odd_sizes(tmp_path):
    video = torch.zeros(3, 6, 18, 22) - 1
    video[0, :, 4:12, 4:12] = 1.0  # a red square
    path = write_mp4(video, tmp_path / "a.mp4", fps=8)
    frames = read_mp4(path)
    assert frames.shape == (6, 18, 22, 3)
    assert abs(int(frames[0, 8, 8, 0]) - 255) < 25 and frames[0, 8, 8, 1] < 40 and frames[0, 15, 18].max() < 30
    odd = write_mp4(torch.zeros(3, 2, 9, 9), tmp_path / "odd.mp4", upscale=1)
    assert read_mp4(odd).shape == (2, 10, 10, 3)
    assert not list(tmp_path.glob("*.partial.mp4"))


def test_uint8_conversion_and_grid():
    video = torch.linspace(-1, 1, 3 * 2 * 2 * 2).view(3, 2, 2, 2)
    frames = to_uint8_frames(video, upscale=2)
    assert frames.shape == (2, 4, 4, 3) and frames.dtype == np.uint8
    assert frames.min() == 0 and frames.max() == 255
    grid = frame_grid([video, video], ["one", "two"], upscale=2)
    assert grid.size[1] == 2 * (4 + 2)
