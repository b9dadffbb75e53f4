"""Configs: dataclass schemas merged from YAML, command-line flags and key=value overrides (omegaconf).

One convention for every command: a structured schema holds every option with its default; `--config`
names a YAML of the schema's keys; trailing `key=value` overrides (dotted for nested sections) win
over it. Flat command schemas also get one `--flag` per field. Unknown keys, wrong types and
impossible values fail at start-up with a message naming the key. This module imports no torch, so
`--help` and argument errors come back at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A user error in a config, a flag or an override: reported as one line, exit status 2."""


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, aliases: tuple = (),
           default_factory: Any = dataclasses.MISSING, **extra):
    """A dataclass field with its help text (and, for command schemas, its flag name)."""
    meta = {"help": help, "flag": flag, "aliases": tuple(aliases), **extra}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# -- sections every training run has -----------------------------------------------------------------
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
    micro_batch_size: int = 8  # per rank, per forward/backward
    # samples per optimiser update over all ranks; gradient accumulation makes up the difference:
    # grad_accum = global_batch_size / (micro_batch_size x ranks). 0 = micro_batch_size x ranks.
    global_batch_size: int = 0
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 100
    sample_every: int = 100  # 0 = only at the end
    keep_checkpoints: int = 2
    out_dir: str = "runs/default"
    resume: str = "auto"  # "auto": latest checkpoint in out_dir if any; "never"; or a checkpoint path
    tensorboard: bool = True  # also log to <out_dir>/tensorboard when the tensorboard package is installed
    peak_tflops: float = 0.0  # per-device peak for the logged MFU; 0 = known GPUs' bf16 peak, none on CPU
    # A resume whose config differs from the run's config.yaml (beyond RESUME_FREE_KEYS) stops with the
    # differences listed; true applies them (optimiser settings included) and records them in
    # config_changes.jsonl.
    allow_config_change: bool = False

    def validate(self):
        for key in ("steps", "micro_batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("seed", "sample_every", "global_batch_size", "peak_tflops"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")

    def grad_accum(self, world_size: int) -> int:
        """Micro-batches per update on each rank, from the global batch size."""
        per_pass = self.micro_batch_size * world_size
        if not self.global_batch_size:
            return 1
        if self.global_batch_size % per_pass:
            raise ConfigError(f"train.global_batch_size={self.global_batch_size} is not a multiple of "
                              f"train.micro_batch_size x ranks = {self.micro_batch_size} x {world_size}")
        return self.global_batch_size // per_pass


@dataclass
class ModelConfig:
    path: str = "toy"  # a diffusers-layout Wan folder, or the name of a shipped one ("toy")


@dataclass
class DataConfig:
    source: str = "toy"  # "toy": the toy world, encoded once and cached; "shards": apt-preprocess output
    path: str = ""  # shards: the shard-set folder (holds index.json)
    frames: int = 9  # clip length in pixel frames (1 = images); shards: must match the set's index
    height: int = 0  # shards: clip size the set must have; 0 = take the index's (the toy world is 32x32)
    width: int = 0
    fps: float = 0.0  # shards: frame rate the set must have; 0 = take the index's
    num_clips: int = 4096  # toy only
    seed: int = 0  # toy only
    cache_dir: str = ""  # toy only: "" = $APT_CACHE_DIR or ~/.cache/seaweed-apt
    # toy only: real latents refined through the frozen VAE decoder (VideoVAE.refine: Adam steps on the
    # decode's pixel error from the encoder's latent), so that they decode as sharp as the clips; 0 = off
    refine_steps: int = 0
    refine_lr: float = 0.08
    # toy only: this fraction of the clips (a fixed random choice) holds the teacher's samples for their
    # captions instead of the real latents (LADD's synthetic data), `teacher_steps` Euler steps with
    # guidance `teacher_guidance`; drawn once (the ranks share the work) and cached; 0 = off
    teacher_fraction: float = 0.0
    teacher_steps: int = 25
    teacher_guidance: float = 5.0

    def validate(self):
        if self.source not in ("toy", "shards"):
            raise ConfigError(f"data.source must be 'toy' or 'shards', got {self.source!r}")
        if self.source == "shards" and not self.path:
            raise ConfigError("data.path: give the shard folder written by apt-preprocess")
        if self.frames < 1:
            raise ConfigError(f"data.frames must be >= 1, got {self.frames}")
        for key in ("height", "width", "fps"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key} must be >= 0 (0 = any), got {getattr(self, key)}")
        if self.num_clips < 1:
            raise ConfigError(f"data.num_clips must be positive, got {self.num_clips}")
        if self.refine_steps < 0 or self.refine_lr <= 0:
            raise ConfigError(f"data.refine_steps must be >= 0 and data.refine_lr > 0, got {self.refine_steps} "
                              f"and {self.refine_lr}")
        if self.refine_steps and self.source != "toy":
            raise ConfigError("data.refine_steps refines the toy world's latents; a shard set holds latents only "
                              "(no clips to refine them against): set data.refine_steps=0")
        if not 0 <= self.teacher_fraction <= 1 or self.teacher_steps < 1:
            raise ConfigError(f"data.teacher_fraction must be in [0, 1] and data.teacher_steps >= 1, got "
                              f"{self.teacher_fraction} and {self.teacher_steps}")
        if self.teacher_fraction and self.source != "toy":
            raise ConfigError("data.teacher_fraction replaces toy-world clips with the teacher's samples; a shard set's "
                              "clips are not replaced: set data.teacher_fraction=0")


@dataclass
class PreviewConfig:
    """Sample videos written during training, at fixed prompts and seeds (prompts=[]: none)."""

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
    preview: PreviewConfig = field(default_factory=PreviewConfig)

    def validate(self):
        for f in fields(self):
            part = getattr(self, f.name)
            if hasattr(part, "validate"):
                part.validate()


# -- loading -----------------------------------------------------------------------------------------
def load_config(schema: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None,
                updates: dict | None = None) -> T:
    """Defaults of `schema` <- YAML <- `updates` (flag values) <- `key=value` overrides, then `validate()`."""
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
    for key, value in (updates or {}).items():
        cfg = _merge(cfg, OmegaConf.create({key: value}), where=key)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"overrides must look like key=value, got {item!r}")
        # one at a time, so an error names the override even when omegaconf names no key;
        # `key=` sets an empty string (omegaconf would read it as null)
        key, value = item.split("=", 1)
        cfg = _merge(cfg, OmegaConf.from_dotlist([f"{key}=''" if value == "" else item]), where=key)
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
    if where not in ("config", key) and not key.startswith(where.split(".")[0]):
        key = f"{where}: {key}"  # a key inside a list item: name the override or file it came from
    msg = (getattr(err, "msg", None) or str(err)).splitlines()[0]  # drop omegaconf's type dump
    return ConfigError(f"{key}: {msg}")


def dump_config(cfg, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    tmp.replace(path)


# Keys a resumed run may change without train.allow_config_change: they decide how long a run goes
# and what it logs, not what it learns.
RESUME_FREE_KEYS = ("train.steps", "train.resume", "train.out_dir", "train.log_every", "train.checkpoint_every",
                    "train.sample_every", "train.keep_checkpoints", "train.tensorboard", "train.peak_tflops",
                    "train.allow_config_change", "preview.")


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def config_changes(saved: str | Path, cfg) -> dict[str, tuple]:
    """{key: (value in the saved config.yaml, value now)} for every key that differs, free keys aside.
    Keys only one side has (options added or removed by another version of this package) are skipped."""
    old = _flatten(OmegaConf.to_container(OmegaConf.load(saved)))
    new = _flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))
    return {k: (old[k], new[k]) for k in sorted(set(old) & set(new))
            if old[k] != new[k] and not k.startswith(RESUME_FREE_KEYS)}


# -- command lines -----------------------------------------------------------------------------------
def command_parser(schema: type, description: str, flags: bool = True, prog: str | None = None
                   ) -> argparse.ArgumentParser:
    """`--config YAML`, trailing `key=value` overrides, and (flags=True, flat schemas) a `--flag` per field."""
    # a sectioned schema (training) lists its keys and defaults after the options: they are its options
    epilog = None if flags else "config keys and their defaults:\n" + "\n".join(
        f"  {key} = {value!r}" for key, value in _flatten(OmegaConf.to_container(OmegaConf.structured(schema))).items())
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    wins = "flags and key=value overrides win" if flags else "key=value overrides win"
    parser.add_argument("--config", type=Path, metavar="YAML", help=f"YAML of {schema.__name__} keys; {wins} over it")
    if flags:
        hints = typing.get_type_hints(schema)
        for f in fields(schema):
            _add_flag(parser, f, hints[f.name])
    example = "seed=3" if flags else "train.steps=50"
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"overrides of config keys (dotted for sections), e.g. {example}")
    return parser


def _add_flag(parser: argparse.ArgumentParser, f: dataclasses.Field, hint) -> None:
    meta = f.metadata
    name = meta.get("flag") or "--" + f.name.replace("_", "-")
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    text = meta.get("help", "")
    shown = "" if default in ("", None, [], dataclasses.MISSING) else f" (default: {default})"
    kwargs: dict = {"dest": f.name, "default": None, "help": f"{text}{shown}".strip() or None}
    origin = typing.get_origin(hint)
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is list and meta.get("many"):  # --flag a b c (values up to the next flag)
        kwargs.update(action="extend", nargs="+", type=typing.get_args(hint)[0], metavar="KEY=VALUE")
    elif origin is list:  # --flag a --flag b
        kwargs.update(action="append", type=typing.get_args(hint)[0], metavar=f.name.rstrip("s").upper())
    else:
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if origin else hint
        kwargs.update(type=base, metavar=f.name.upper())
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
    parser.add_argument(name, *meta.get("aliases", ()), **kwargs)


def parse_command(schema: type[T], argv, description: str, flags: bool = True, prog: str | None = None) -> T:
    """The command line of any entry point -> a validated `schema` instance (ConfigError on bad values)."""
    parser = command_parser(schema, description, flags, prog)
    args = parser.parse_intermixed_args(argv)
    updates = {}
    if flags:
        updates = {f.name: getattr(args, f.name) for f in fields(schema) if getattr(args, f.name) is not None}
    return load_config(schema, args.config, args.overrides, updates)
