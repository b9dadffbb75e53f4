"""Configs: dataclass schemas merged from YAML and key=value overrides (omegaconf).

Unknown keys, wrong types and impossible values fail at start-up with a message naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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
    # false keeps each block's gathered weights from forward to backward (one all-gather per block
    # per step, not two): faster, at the memory of unsharded weights for the whole step (ZeRO-2-like)
    reshard_after_forward: bool = True

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


@dataclass
class ModelConfig:
    path: str = "toy"  # "toy" = the shipped toy teacher folder, else a diffusers-layout Wan folder


@dataclass
class DataConfig:
    source: str = "toy"  # "toy": the toy world, encoded once and cached; "shards": scripts/preprocess.py output
    path: str = ""  # shards: the shard-set folder (holds index.json)
    frames: int = 9  # clip length in pixel frames (1 = images); shards: must match the set's index
    height: int = 0  # shards: clip size the set must have; 0 = take the index's (the toy world is 32x32)
    width: int = 0
    fps: float = 0.0  # shards: frame rate the set must have; 0 = take the index's
    num_clips: int = 4096  # toy only
    seed: int = 0  # toy only
    cache_dir: str = ""  # toy only: "" = $APT_CACHE_DIR or ~/.cache/seaweed-apt

    def validate(self):
        if self.source not in ("toy", "shards"):
            raise ConfigError(f"data.source must be 'toy' or 'shards', got {self.source!r}")
        if self.source == "shards" and not self.path:
            raise ConfigError("data.path: give the shard folder written by scripts/preprocess.py")
        if self.frames < 1:
            raise ConfigError(f"data.frames must be >= 1, got {self.frames}")
        for key in ("height", "width", "fps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key} must be >= 0 (0 = any), got {getattr(self, key)}")
        if self.num_clips < 1:
            raise ConfigError(f"data.num_clips must be positive, got {self.num_clips}")


@dataclass
class SamplingConfig:
    prompts: list[str] = field(default_factory=lambda: [
        "a red seven moving up and to the left",
        "a blue two moving right",
        "a yellow four moving down",
        "a cyan zero moving up and to the right",
    ])
    seed: int = 1000  # prompt i uses seed + i, the same at every sampling step
    fps: int = 8
    upscale: int = 4


@dataclass
class RunConfig:
    """Sections every training run has; a stage's config adds its own section (cd, adv)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def validate(self):
        for f in fields(self):
            part = getattr(self, f.name)
            if hasattr(part, "validate"):
                part.validate()


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


def config_arg_parser(doc: str):
    """`--config YAML` plus trailing key=value overrides: the command line of every training entry."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML config, e.g. configs/toy/distill.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=50")
    return parser
