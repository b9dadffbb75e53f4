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
from dataclasses import field, fields
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


# -- loading -----------------------------------------------------------------------------------------
def load_config(schema: type[T], yaml_path: str | Path | None = None, overrides: list[str] | None = None,
                updates: dict | None = None) -> T:
    """Defaults of `schema` <- YAML <- `updates` (flag values) <- `key=value` overrides, then `validate()`."""
    cfg = OmegaConf.structured(schema)
    if yaml_path is not None:
        for path, loaded in yaml_chain(Path(yaml_path)):
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


def yaml_chain(path: Path, _seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """A YAML of config keys and the YAMLs it builds on, in merge order: a file may name others in a
    top-level `base:` (a path, or a list of paths, relative to it), which are merged first, so that a
    model's file holds only what differs from its stage's base."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: its base: chain comes back to itself")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # a YAML syntax error
        raise ConfigError(f"{path}: {err}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    bases = loaded.pop("base", None)
    bases = [] if bases is None else [bases] if isinstance(bases, str) else list(bases)
    chain = []
    for base in bases:
        chain += yaml_chain(path.parent / str(base), (*_seen, path.resolve()))
    return [*chain, (path, loaded)]


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
    """Write the resolved config as YAML, atomically (a crash never leaves half a file) and never through
    a symlink."""
    from apt.core.files import write_atomically

    write_atomically(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def flatten(tree, prefix: str = "") -> dict:
    """{"a.b": value} for a nested dict {"a": {"b": value}}."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


# -- command lines -----------------------------------------------------------------------------------
def command_parser(schema: type, description: str, flags: bool = True, prog: str | None = None
                   ) -> argparse.ArgumentParser:
    """`--config YAML`, trailing `key=value` overrides, and (flags=True, flat schemas) a `--flag` per field."""
    # a sectioned schema (training) lists its keys and defaults after the options: they are its options
    epilog = None if flags else "config keys and their defaults:\n" + "\n".join(
        f"  {key} = {value!r}" for key, value in flatten(OmegaConf.to_container(OmegaConf.structured(schema))).items())
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    wins = "flags and key=value overrides win" if flags else "key=value overrides win"
    parser.add_argument("--config", type=Path, metavar="YAML", help=f"YAML of {schema.__name__} keys; {wins} over it")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (YAML, its base: files and overrides merged) and exit")
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
    cfg = load_config(schema, args.config, args.overrides, updates)
    if args.print_config:
        print(OmegaConf.to_yaml(OmegaConf.structured(cfg)), end="")
        raise SystemExit(0)
    return cfg
