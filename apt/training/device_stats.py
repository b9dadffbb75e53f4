"""What the trainer logs about the hardware: a device's peak FLOP/s (for the MFU) and its peak memory."""

from __future__ import annotations

import resource

import torch

# Dense bf16 peak per GPU, for the logged model FLOP utilisation (train.peak_tflops overrides).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
               "A800": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def device_peak_flops(device: torch.device, configured_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of one device: the configured value, a known GPU's bf16 peak, else None (CPUs)."""
    if configured_tflops:
        return configured_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "GH200" before "H200"
            if key in name:
                return PEAK_TFLOPS[key] * 1e12
    return None


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory since the last call: allocated CUDA memory, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
        return round(peak, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB on Linux
