"""What a diffusers-layout model folder is and declares about itself (no torch: commands read it first).

A folder has transformer/, vae/, text_encoder/ and tokenizer/ (apt/models/loading.py loads them), and may
carry a small manifest beside model_index.json, seaweed_apt.json, that says what it is ("kind":
"teacher", or "one-step" for an export of this project) and its native sample size ("sample":
height, width, frames, fps, upscale). A folder without one is a real-scale teacher (REAL_SAMPLE).
"""

from __future__ import annotations

import json
from pathlib import Path

from apt.core import plugins
from apt.core.config import ConfigError
from apt.core.files import mismatched

PARTS = ("transformer", "vae", "text_encoder", "tokenizer")
MANIFEST = "seaweed_apt.json"
REAL_SAMPLE = dict(height=720, width=1280, frames=49, fps=24, upscale=1)  # 2 s of 1280x720 at 24 fps


def check_layout(model_dir: str | Path, parts=PARTS) -> Path:
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} does not exist")
    missing = [p for p in parts if not (model_dir / p).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{model_dir} is not a diffusers-layout folder: missing {', '.join(f'{m}/' for m in missing)} "
            f"(expected {', '.join(f'{p}/' for p in PARTS)})"
        )
    check_one_dit(model_dir)
    return model_dir


def check_one_dit(model_dir: Path) -> None:
    """A Wan 2.2 A14B folder holds two DiTs (transformer/ samples above boundary_ratio, transformer_2/
    below); loading only transformer/ would quietly make the high-noise expert the teacher at every t."""
    index = model_dir / "model_index.json"
    declared = json.loads(index.read_text()) if index.is_file() else {}
    second = declared.get("transformer_2")
    if (second and second[0]) or (model_dir / "transformer_2").is_dir():
        raise ConfigError(
            f"{model_dir} holds two DiTs, transformer/ and transformer_2/ (Wan 2.2 A14B's high- and low-noise "
            f"experts, switched at boundary_ratio {declared.get('boundary_ratio')}); this project distils one DiT "
            f"and would drop the low-noise expert: give a one-DiT folder (Wan 2.1 T2V 1.3B / 14B, Wan 2.2 TI2V-5B)"
        )


def shipped_models() -> tuple[str, ...]:
    """Names of the model folders installed packages ship (the `seaweed_apt.models` plugins: 'toy')."""
    return tuple(sorted(plugins.registered("models")))


def resolve_model_dir(path: str | Path) -> Path:
    """A shipped model's name (a `seaweed_apt.models` plugin, e.g. 'toy') or a folder path."""
    if str(path) in shipped_models():
        return Path(plugins.load("models", str(path)))
    return Path(path).expanduser()


def read_manifest(folder: str | Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err}): the folder's manifest is damaged") from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path} is not a manifest (a JSON object)")
    return manifest


def verify_files(model_dir: str | Path, parts=None) -> None:
    """An export's files against the SHA-256 its manifest recorded (those under `parts`, or all): a
    flipped bit or a replaced file stops the load, naming the file. Folders without recorded hashes (a
    teacher, an export of an earlier version) pass."""
    hashes = (read_manifest(model_dir) or {}).get("sha256") or {}
    chosen = {k: v for k, v in hashes.items() if parts is None or k.split("/")[0] in parts}
    bad = mismatched(model_dir, chosen)
    if bad:
        raise ConfigError(f"{Path(model_dir) / bad[0]} is not the file that was exported (its SHA-256 differs from "
                          f"{MANIFEST}'s){f', nor are {len(bad) - 1} more' if len(bad) > 1 else ''}: export again "
                          "or copy the folder again")


def native_sample(model_dir: str | Path) -> dict:
    """height, width, frames, fps and upscale a model samples by default: its manifest's, else REAL_SAMPLE."""
    manifest = read_manifest(model_dir) or {}
    return {**REAL_SAMPLE, **manifest.get("sample", {})}


def is_one_step(model_dir: str | Path) -> bool:
    """An export of a one-step generator (sampled in 1 or 2 steps, no CFG), not a teacher."""
    return (read_manifest(model_dir) or {}).get("kind") == "one-step"
