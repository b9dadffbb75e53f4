"""What the trainer logs besides the stage's own metrics: throughput, memory, TensorBoard, logging."""

import pytest
import torch

from apt.training.device_stats import device_peak_flops


def test_peak_flops_known_for_configured_values_and_not_guessed_on_cpu():
    assert device_peak_flops(torch.device("cpu")) is None
    assert device_peak_flops(torch.device("cpu"), configured_tflops=2.5) == 2.5e12


def test_throughput_is_flops_over_time_per_device_and_mfu_against_the_peak():
    from apt.training.trainer import Trainer

    class _Dist:
        world_size, device = 2, torch.device("cpu")

    h = Trainer.__new__(Trainer)
    h.dist = _Dist()
    out = h._throughput(seconds_per_step=2.0, flops_per_step=8e12, peak=4e12)
    assert out["tflops_per_device"] == pytest.approx(2.0) and out["mfu"] == pytest.approx(0.5)
    assert out["peak_memory_gb"] > 0
    assert "mfu" not in h._throughput(2.0, 8e12, None)


def test_tensorboard_gets_the_scalars_and_the_preview_video(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from apt.core.video import tiled_gif
    from apt.training.run_log import RunLog

    log = RunLog(tmp_path, tensorboard=True)
    for step in (1, 2):
        log.write({"step": step, "loss": 1.0 / step, "error": "none"})
    gif = tmp_path / "preview.gif"
    gif.write_bytes(tiled_gif([torch.rand(3, 5, 8, 8) * 2 - 1, torch.zeros(3, 5, 8, 8)], upscale=2, fps=4))
    log.video("preview", gif, 2)
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([1.0, 0.5])
    image = events.Images("preview")[0]
    assert image.step == 2 and image.encoded_image_string[:6] == b"GIF89a" and (image.width, image.height) == (34, 16)


def test_resumed_tensorboard_drops_events_past_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from apt.training.run_log import RunLog

    log = RunLog(tmp_path, tensorboard=True)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": float(step)})
    log.close()
    log = RunLog(tmp_path, resume_step=1, tensorboard=True)
    log.write({"step": 2, "loss": 20.0})
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 1.0), (2, 20.0)]


def test_messages_go_through_python_logging_on_rank_zero_only(capsys):
    from apt.training.run_log import RunLog, setup_logging

    setup_logging(rank=0)
    log = RunLog.__new__(RunLog)  # only its rank matters for messages
    log.rank = 0
    log.message("hello from rank 0")
    log.rank = 1
    log.message("hello from rank 1")
    out = capsys.readouterr()
    assert "hello from rank 0" in out.out + out.err and "rank 1" not in out.out + out.err
