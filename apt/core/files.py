"""Files the project writes and reads back: where its cache lives, content hashes that catch a flipped
bit, writes that never follow a symlink nor leave half a file, and the one pickle it must read (a DCP
checkpoint's metadata) through an unpickler that admits only DCP's own classes."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import shutil
from pathlib import Path

CHUNK = 8 << 20
DISK_NEARLY_FULL = 64 << 20  # free bytes under which a failed write is taken for a full disk


class DamagedFile(RuntimeError):
    """A file whose content is not what was written (cut short, a flipped bit, replaced)."""


class DiskFull(OSError):
    """A write failed because the disk is full (the message says where and how much is free)."""


def disk_full(err: BaseException, where: Path) -> bool:
    """Whether a failed write looks like a full disk: ENOSPC anywhere in the exception's chain (DCP and
    torch.save wrap it, torch.save's zip writer even as "unexpected pos"), or almost no space left."""
    seen = err
    while seen is not None:
        if getattr(seen, "errno", None) == errno.ENOSPC or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(where).free < DISK_NEARLY_FULL
    except OSError:
        return False


def disk_full_error(where: Path, what: str, then: str = "") -> DiskFull:
    free = shutil.disk_usage(where).free / 2**30
    return DiskFull(errno.ENOSPC, f"disk full while writing {what} ({free:.2f} GiB free on that disk)"
                                  + (f"; {then}" if then else ""))


def cache_dir() -> Path:
    """$APT_CACHE_DIR, else ~/.cache/seaweed-apt."""
    return Path(os.environ.get("APT_CACHE_DIR") or Path.home() / ".cache" / "seaweed-apt").expanduser()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_files(root: str | Path, names) -> dict[str, str]:
    """{name: sha256} of the files `names` (relative to root)."""
    return {name: sha256_file(Path(root) / name) for name in sorted(names)}


def mismatched(root: str | Path, expected: dict[str, str]) -> list[str]:
    """The names of `expected` whose file is missing or whose content hash differs."""
    root = Path(root)
    return [name for name, digest in sorted(expected.items())
            if not (root / name).is_file() or sha256_file(root / name) != digest]


def _no_follow_open(path: Path, flags: int):
    """A file descriptor for `path` that refuses to go through a symlink at its last component."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        if path.is_symlink():
            raise FileExistsError(f"{path} is a symlink: not written through (remove it or choose another path)") \
                from err
        raise


def append_text(path: str | Path, text: str) -> None:
    """Append to a file, never through a symlink."""
    fd = _no_follow_open(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(text)


def open_fresh(path: str | Path, mode: str = "wb"):
    """A new file at `path` for writing (a temporary one the caller renames into place): whatever was at
    `path`, a symlink included, is removed first, and the open refuses to follow a symlink."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    return os.fdopen(_no_follow_open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), mode)


def write_atomically(path: str | Path, data: bytes | str) -> Path:
    """Write to a temporary file beside `path`, then rename it over `path`: a crash leaves the old file or
    the new one, and a symlink at `path` is replaced, not written through."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open_fresh(tmp) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def make_readable(path: str | Path) -> None:
    """Give a file (or every file of a folder) the mode a plain write gives (0666 less the umask):
    safetensors and DCP write some files owner-only (0600)."""
    umask = os.umask(0)
    os.umask(umask)
    path = Path(path)
    for file in (path.rglob("*") if path.is_dir() else [path]):
        if file.is_file() and not file.is_symlink():
            file.chmod(0o666 & ~umask)


def save_safetensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> Path:
    """safetensors' save_file, atomically (a temporary file renamed into place), with a plain file's mode."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.is_symlink():
        tmp.unlink()
    save_file(tensors, str(tmp), metadata=metadata)
    make_readable(tmp)
    os.replace(tmp, path)
    return path


# A DCP checkpoint's .metadata: what its pickle may name (module -> names; None = any name of it).
DCP_PICKLE_ALLOWED = {
    "torch.distributed.checkpoint.metadata": None,
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch": {"Size", "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
              "bool", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"},
    "collections": {"OrderedDict"},
    "builtins": {"set", "frozenset", "slice"},
}


class UnsafePickle(pickle.UnpicklingError):
    """A pickle naming something outside its allowed classes."""


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        allowed = DCP_PICKLE_ALLOWED.get(module, set())
        if allowed is not None and name not in allowed:
            raise UnsafePickle(f"names {module}.{name}, which a checkpoint's metadata never holds")
        return super().find_class(module, name)


def check_dcp_metadata(path: str | Path) -> None:
    """Unpickle a checkpoint's .metadata with only DCP's own classes admitted (UnsafePickle otherwise),
    before DCP itself reads it."""
    _Restricted(io.BytesIO(Path(path).read_bytes())).load()
