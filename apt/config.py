"""Configs: dataclass schemas merged from YAML and key=value overrides (omegaconf).

Unknown keys, wrong types and impossible values fail at start-up with a message naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    pass


@dataclass
class ParallelConfig:
    fsdp: bool = True  # FSDP2 fully_shard per block; a 1-process run uses a world-of-one group
    activation_checkpointing: bool = True
    mixed_precision: str = "fp32"  # "bf16": bf16 params/compute, fp32 gradient reduction

    def validate(self):
        if self.mixed_precision not in ("bf16", "fp32"):
            raise ConfigError(f"parallel.mixed_precision must be 'bf16' or 'fp32', got {self.mixed_precision!r}")
        if self.mixed_precision == "bf16" and not self.fsdp:
            # bf16 compute with fp32 master weights is FSDP2's MixedPrecisionPolicy; without FSDP it
            # would silently become pure-bf16 training
            raise ConfigError("parallel.mixed_precision=bf16 needs parallel.fsdp=true")


@dataclass
class TrainConfig:
    steps: int = 100
    micro_batch_size: int = 8  # per rank, per accumulation step
    grad_accum: int = 1  # effective batch = micro_batch_size * grad_accum * world_size
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 100
    sample_every: int = 100  # 0 = only at the end
    keep_checkpoints: int = 2
    out_dir: str = "runs/default"
    resume: str = "auto"  # "auto": latest checkpoint in out_dir if any; "never"; or a checkpoint path

    def validate(self):
        for key in ("steps", "micro_batch_size", "grad_accum", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.sample_every < 0:
            raise ConfigError(f"train.sample_every must be >= 0, got {self.sample_every}")


def load_config(schema: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of `schema` <- YAML <- `key=value` overrides, then `validate()` if the schema has one."""
    cfg = OmegaConf.structured(schema)
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # a YAML syntax error
            raise ConfigError(f"{path}: {err}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: the top level must be a mapping of config keys")
        cfg = _merge(cfg, loaded, where=str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"overrides must look like key=value, got {item!r}")
        # one at a time, so an error names the override even when omegaconf names no key
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), where=item.split("=", 1)[0])
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise _config_error(err, where="config") from None
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def _merge(cfg, other, where: str):
    try:
        return OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as err:
        raise _config_error(err, where) from None


def _config_error(err: OmegaConfBaseException, where: str) -> ConfigError:
    key = getattr(err, "full_key", None) or where
    msg = (getattr(err, "msg", None) or str(err)).splitlines()[0]  # drop omegaconf's type dump
    return ConfigError(f"{key}: {msg}")


def dump_config(cfg, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
