"""Seaweed-APT: adversarial post-training of video diffusion transformers into one-step generators."""

import warnings as _warnings

# Warnings PyTorch raises about things this project does on purpose; none says anything a user can
# act on, so none reaches them (setup.cfg's [tool:pytest] filterwarnings repeats these for tests,
# since pytest resets filters per test).
# - DCP outside a process group: export, generate and evaluate read a checkpoint in one process.
_warnings.filterwarnings("ignore", message=r"torch\.distributed is disabled, unavailable or uninitialized")
# - FSDP2 warns that a wrapped module returned a view: an in-place op on it would skip the
#   all-gather, and nothing in this project modifies a model output in place.
_warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
