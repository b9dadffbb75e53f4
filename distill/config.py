"""Stage-1 configuration: configs/<model>/distill.yaml merged over these defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from apt.core.config import ConfigError
from apt.training.config import RunConfig


@dataclass
class CDConfig:
    num_steps: int = 32  # N discretisation intervals (APT2 uses 32)
    shift: float = 3.0  # shift of the discretisation grid (APT2: 24 for video at scale)
    guidance_scale: float = 7.5  # constant teacher CFG, baked into the student (paper: 7.5)
    negative_prompt: str = ""  # the teacher CFG's negative prompt (paper: a fixed one)
    target: str = "ema"  # "ema": EMA target network; "stopgrad": the online student under no_grad
    ema_decay: float = 0.99  # the EMA is also the exported / sampled generator
    lr: float = 1e-4  # AdamW learning rate of the student
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # 0 = no clipping

    def validate(self):
        if self.num_steps < 1:
            raise ConfigError(f"cd.num_steps must be >= 1, got {self.num_steps}")
        if self.target not in ("ema", "stopgrad"):
            raise ConfigError(f"cd.target must be 'ema' or 'stopgrad', got {self.target!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"cd.ema_decay must be in [0, 1), got {self.ema_decay}")
        for key in ("shift", "lr"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"cd.{key} must be positive, got {getattr(self, key)}")
        for key in ("guidance_scale", "weight_decay", "max_grad_norm"):
            if getattr(self, key) < 0:
                raise ConfigError(f"cd.{key} must be >= 0, got {getattr(self, key)}")


@dataclass
class DistillConfig(RunConfig):
    cd: CDConfig = field(default_factory=CDConfig)
