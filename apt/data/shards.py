"""Sharded latents + text embeddings on disk: the writer (preprocessing), the index, the reader (training).

Layout of a shard set:
    index.json                     what training reads: clip spec, shapes, encoder stamp, shard list
    report.json                    preprocessing report: counts and every skipped file with its reason
    shards/r{rank:03d}-{n:05d}.safetensors
    skipped-r{rank:03d}.jsonl      append-only log of skipped files (resume keeps it)

A shard holds `latents` (N, C, T, h, w), `text` (sum of tokens, D): each caption's UNPADDED tokens
packed end to end (the text encoder zeroes padding, so trimming is lossless; re-padded to (L, D) on
load), `text_offsets` (N + 1,), and JSON `captions` / `sources` in the safetensors metadata. A shard
is written to a temporary name and renamed, so a finished shard is complete and is the record that
its sources are done: a resumed run skips them, and a crash loses at most the shard being filled.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import safe_open

from apt.core.files import save_safetensors, write_atomically

FORMAT = "seaweed-apt-shards/1"
INDEX = "index.json"
SHARD_RE = re.compile(r"^r(\d{3,})-(\d{5,})\.safetensors$")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def shard_files(root: Path) -> list[Path]:
    """Finished shards (temporary files never match the pattern), in name order."""
    folder = Path(root) / "shards"
    return sorted(p for p in folder.glob("*.safetensors") if SHARD_RE.match(p.name)) if folder.is_dir() else []


def read_shard_meta(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        count = f.get_slice("latents").get_shape()[0]
    return {"file": f"shards/{path.name}", "count": count, "sources": json.loads(meta.get("sources", "[]")),
            "stamp": json.loads(meta.get("stamp", "{}"))}


class ShardWriter:
    """Buffers encoded items of one rank and writes a shard every `shard_size` items (and at close)."""

    def __init__(self, root: Path, rank: int, shard_size: int, dtype: torch.dtype, stamp: dict):
        self.root, self.rank, self.shard_size, self.dtype, self.stamp = Path(root), rank, shard_size, dtype, stamp
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        mine = [int(m.group(2)) for p in shard_files(self.root)
                if (m := SHARD_RE.match(p.name)) and int(m.group(1)) == rank]
        self.next_index = max(mine, default=-1) + 1  # a resumed rank never overwrites its shards
        self.items: list[tuple[torch.Tensor, torch.Tensor, str, str]] = []
        self.written: list[Path] = []

    def add(self, latent: torch.Tensor, text_tokens: torch.Tensor, caption: str, source: str) -> None:
        """latent (C, T, h, w); text_tokens (n, D), the caption's unpadded tokens."""
        self.items.append((latent.to(self.dtype).cpu(), text_tokens.to(self.dtype).cpu(), caption, source))
        if len(self.items) >= self.shard_size:
            self.flush()

    def flush(self) -> Path | None:
        if not self.items:
            return None
        latents, texts, captions, sources = zip(*self.items)
        lengths = torch.tensor([0] + [t.shape[0] for t in texts], dtype=torch.int64)
        tensors = {"latents": torch.stack(latents).contiguous(), "text": torch.cat(texts).contiguous(),
                   "text_offsets": lengths.cumsum(0)}
        meta = {"format": FORMAT, "captions": json.dumps(list(captions)), "sources": json.dumps(list(sources)),
                "stamp": json.dumps(self.stamp, sort_keys=True)}
        path = self.root / "shards" / f"r{self.rank:03d}-{self.next_index:05d}.safetensors"
        save_safetensors(tensors, path, metadata=meta)
        self.next_index += 1
        self.items = []
        self.written.append(path)
        return path


def write_index(root: Path, spec: dict) -> dict:
    """Scan the finished shards and write index.json (atomically). A source in two shards (it cannot
    happen through preprocess, but a user may merge folders) is served once."""
    root = Path(root)
    shards, seen, count = [], set(), 0
    for path in shard_files(root):
        meta = read_shard_meta(path)
        if meta["stamp"] != spec["stamp"]:
            raise ValueError(f"{path} was written with other settings ({meta['stamp']}) than this run "
                             f"({spec['stamp']}): use a new output folder")
        rows = [i for i, s in enumerate(meta["sources"]) if s not in seen]
        seen.update(meta["sources"])
        entry = {"file": meta["file"], "count": meta["count"]}
        if len(rows) != meta["count"]:
            entry["rows"] = rows
        shards.append(entry)
        count += len(rows)
    index = {"format": FORMAT, **spec, "num_items": count, "shards": shards}
    write_atomically(root / INDEX, json.dumps(index, indent=1))
    return index


class ShardDataset(torch.utils.data.Dataset):
    """Items {"latent": (C, T, h, w) float32, "text": (L, D) float32 zero-padded, "caption": str}, read
    lazily from memory-mapped safetensors (a few shards kept open)."""

    def __init__(self, root: str | Path, open_shards: int = 8):
        self.root = Path(root).expanduser()
        path = self.root / INDEX
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run scripts/preprocess.py to the end "
                                    f"(running it again resumes and writes the index)")
        self.index = json.loads(path.read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown format {self.index.get('format')!r}, expected {FORMAT!r}")
        self.text_len = int(self.index["text_shape"][0])
        self._rows: list[tuple[int, int]] = []  # (shard, row) per item
        for s, shard in enumerate(self.index["shards"]):
            self._rows += [(s, r) for r in shard.get("rows", range(shard["count"]))]
        self._open: OrderedDict[int, object] = OrderedDict()
        self._max_open = open_shards
        self._captions: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def _shard(self, s: int):
        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        handle = safe_open(str(self.root / self.index["shards"][s]["file"]), "pt")
        self._open[s] = handle
        self._captions[s] = json.loads(handle.metadata()["captions"])
        if len(self._open) > self._max_open:
            old, _ = self._open.popitem(last=False)
            self._captions.pop(old, None)
        return handle

    def __getitem__(self, i: int) -> dict:
        s, r = self._rows[i]
        f = self._shard(s)
        lo, hi = f.get_slice("text_offsets")[r:r + 2].tolist()
        tokens = f.get_slice("text")[lo:hi].float()
        text = torch.zeros(self.text_len, tokens.shape[1])
        text[: tokens.shape[0]] = tokens
        latent = f.get_slice("latents")[r].float()
        if not (torch.isfinite(latent).all() and torch.isfinite(tokens).all()):
            # a corrupted shard would otherwise train the model into NaN, several steps later
            raise ValueError(f"{self.root / self.index['shards'][s]['file']}: item {r} holds non-finite "
                             f"values (a corrupted shard): delete the file and run apt-preprocess again")
        return {"latent": latent, "text": text, "caption": self._captions[s][r]}
