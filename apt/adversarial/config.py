"""Stage-2 configuration: configs/<model>/apt*.yaml merged over these defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from apt.config import ConfigError, RunConfig


@dataclass
class AdversarialConfig:
    generator_init: str = ""  # stage-1 run dir or checkpoint (its EMA), or "teacher" (for tests only)
    lr_generator: float = 5e-6  # paper: 5e-6 image stage, 3e-6 video stage
    lr_discriminator: float = 5e-6
    # the new token heads and logit layer only; 0 = lr_discriminator (the paper uses one learning rate)
    lr_heads: float = 0.0
    rmsprop_alpha: float = 0.9  # RMSProp alpha 0.9 (= Adam beta1 0, beta2 0.9)
    ema_decay: float = 0.995
    d_shift: float = 12.0  # D re-noising t ~ shift(U(0,1), s): 1 for images, 12 for video
    r1_weight: float = 100.0  # approximate R1 lambda; 0 disables it (the ablation)
    r1_sigma: float = 0.1  # 0.01 images, 0.1 video
    r2_weight: float = 0.0  # approximate R2 on generated samples (APT2: 1000 with sigma 0.1); 0 = off
    r2_sigma: float = 0.1
    feature_matching_weight: float = 0.0  # SeedVR2-style L1 on D's tapped features, added to L_G; 0 = off
    loss: str = "nonsaturating"  # or "relativistic" (APT2's pairing loss)
    taps: list[int] = field(default_factory=list)  # 1-based; empty = 4/9, 13/18, 1 of depth
    head_mlp_ratio: float = 4.0
    collapse_d_loss: float = 1e-3  # stop when the D loss stays below this ...
    collapse_patience: int = 20  # ... for this many consecutive steps

    def validate(self):
        if not self.generator_init:
            raise ConfigError("adv.generator_init: give the stage-1 run (or checkpoint) the generator starts from")

        if self.loss not in ("nonsaturating", "relativistic"):
            raise ConfigError(f"adv.loss must be 'nonsaturating' or 'relativistic', got {self.loss!r}")
        if self.lr_heads < 0:
            raise ConfigError(f"adv.lr_heads must be >= 0 (0 = adv.lr_discriminator), got {self.lr_heads}")
        for key in ("lr_generator", "lr_discriminator", "d_shift"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"adv.{key} must be positive, got {getattr(self, key)}")
        for name in ("r1", "r2"):
            if getattr(self, f"{name}_weight") < 0 or getattr(self, f"{name}_sigma") <= 0:
                raise ConfigError(f"adv.{name}_weight must be >= 0 and adv.{name}_sigma > 0")
        if self.feature_matching_weight < 0:
            raise ConfigError(f"adv.feature_matching_weight must be >= 0, got {self.feature_matching_weight}")
        if not 0.0 <= self.ema_decay < 1.0 or not 0.0 < self.rmsprop_alpha < 1.0:
            raise ConfigError("adv.ema_decay must be in [0, 1) and adv.rmsprop_alpha in (0, 1)")


@dataclass
class APTConfig(RunConfig):
    adv: AdversarialConfig = field(default_factory=AdversarialConfig)
