"""The token store: image tokens of many images, keyed by image id, on disk.

Layout of a store folder::

    vq_config.json                          the VQConfig of the tokenizer that made the tokens
    tokens-r00000-000000.safetensors        a shard: "image_tokens" (N, num_tokens) int16/int32,
    tokens-r00000-000001.safetensors        row-major code grids; its metadata lists its N image ids
    tokens-r00001-000000.safetensors        (one run of shards per writer rank)
    index.json                              image_id -> [shard, row], derived from the shards

Shards are written atomically and never change once written, and each carries its own id list, so
the shards are the truth and ``index.json`` is a cache of them: a reader that finds shards the index
does not list (another rank finished later, or a crash came between a shard and the index) rebuilds
the index from the shards' headers. So any number of writers (ranks of torchrun/accelerate) can fill
one folder at once, each with its own shard names, and ``merge_index`` is safe to call by each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from llmcxr import atomic
from llmcxr.config import load_config, save_config, to_dict
from llmcxr.errors import BadInputError
from llmcxr.vq.config import VQConfig

INDEX_NAME = "index.json"
CONFIG_NAME = "vq_config.json"
TOKENS_KEY = "image_tokens"
SHARD_PATTERN = re.compile(r"^tokens-r(\d{5})-(\d{6})\.safetensors$")
STORE_FORMAT = "llmcxr-token-store/1"


def shard_name(rank: int, sequence: int) -> str:
    return f"tokens-r{rank:05d}-{sequence:06d}.safetensors"


def shard_files(folder: Path) -> list[Path]:
    """Every shard in ``folder``, sorted by name (rank, then sequence)."""
    return sorted(p for p in folder.glob("tokens-r*.safetensors") if SHARD_PATTERN.match(p.name))


def token_dtype(codebook_size: int) -> np.dtype:
    """The smallest signed integer type holding every code: int16 for <= 32,768 codes (MIMIC-CXR's
    377k images x 256 tokens = 193 MB instead of 772 MB at int64)."""
    return np.dtype(np.int16) if codebook_size <= 2**15 else np.dtype(np.int32)


def _shard_ids(path: Path) -> list[str]:
    """The image ids of a shard, from its header only (no token data is read)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        return list(json.loads(metadata["image_ids"]))
    except Exception as err:  # safetensors raises its own types for a damaged header
        raise BadInputError(
            path, f"damaged token shard ({type(err).__name__}: {err})", "delete it and re-run encode"
        ) from None


def build_index(folder: Path) -> dict[str, Any]:
    """The index of every shard in ``folder``: ``{"images": {id: [shard, row]}, "shards": {shard: rows}}``.

    Where an id occurs in two shards (a re-run under another world size), the later shard wins.
    """
    images: dict[str, list[Any]] = {}
    shards: dict[str, int] = {}
    for path in shard_files(folder):
        ids = _shard_ids(path)
        shards[path.name] = len(ids)
        for row, image_id in enumerate(ids):
            images[image_id] = [path.name, row]
    return {"format": STORE_FORMAT, "num_images": len(images), "shards": shards, "images": images}


def merge_index(folder: str | Path) -> dict[str, Any]:
    """Rebuild ``index.json`` from the shards on disk and write it atomically; returns the index.

    Each rank of a sharded encode calls this when it finishes; whichever runs last writes the full
    index, and a reader rebuilds any index that misses shards, so no barrier is needed.
    """
    folder = Path(folder)
    index = build_index(folder)
    atomic.write_text(folder / INDEX_NAME, json.dumps(index, separators=(",", ":")) + "\n")
    return index


class TokenStore:
    """Read-only view of a token store folder: ``store.get(image_id) -> (num_tokens,) int64``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / CONFIG_NAME).is_file():
            raise BadInputError(
                self.folder, f"not a token store ({CONFIG_NAME} missing)", "run `llmcxr vq encode` first"
            )
        self._config = load_config(VQConfig, self.folder / CONFIG_NAME)
        self._index = self._read_index()
        self._load_shard = lru_cache(maxsize=32)(self._read_shard)

    def _read_index(self) -> dict[str, Any]:
        """index.json when it lists exactly the shards on disk, else an index rebuilt from the shards."""
        on_disk = {p.name for p in shard_files(self.folder)}
        try:
            index = json.loads((self.folder / INDEX_NAME).read_text(encoding="utf-8"))
            if index.get("format") == STORE_FORMAT and set(index["shards"]) == on_disk:
                return index
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return build_index(self.folder)

    def _read_shard(self, name: str) -> np.ndarray:
        path = self.folder / name
        try:
            return load_file(str(path))[TOKENS_KEY]
        except Exception as err:
            raise BadInputError(path, f"unreadable token shard ({type(err).__name__}: {err})") from None

    @property
    def config(self) -> VQConfig:
        """The VQConfig of the tokenizer that made these tokens."""
        return self._config

    @property
    def num_tokens(self) -> int:
        return self._config.num_tokens

    def ids(self) -> list[str]:
        """All image ids, in shard order (rank, sequence, row)."""
        return list(self._index["images"])

    def __len__(self) -> int:
        return len(self._index["images"])

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index["images"]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def get(self, image_id: str) -> np.ndarray:
        """The image tokens of one image: int64 (num_tokens,), the row-major code grid."""
        try:
            name, row = self._index["images"][image_id]
        except KeyError:
            raise KeyError(f"image id {image_id!r} is not in the token store {self.folder}") from None
        return self._load_shard(name)[row].astype(np.int64)

    def get_many(self, image_ids: Iterable[str]) -> np.ndarray:
        """int64 (N, num_tokens) for N ids, in the order given."""
        rows = [self.get(i) for i in image_ids]
        return np.stack(rows) if rows else np.zeros((0, self.num_tokens), np.int64)

    def grid(self, image_id: str) -> np.ndarray:
        """int64 (grid_size, grid_size): the tokens as the VQ-GAN's code grid (``VQGAN.decode`` input)."""
        g = self._config.grid_size
        return self.get(image_id).reshape(g, g)


class TokenStoreWriter:
    """Appends image tokens to a store folder in shards of ``shard_size`` rows, each written atomically.

    ``rank`` keeps the shard names of concurrent writers apart. ``close()`` writes the last shard and
    merges the index. Use as a context manager; on an exception the rows of the unfinished shard are
    dropped (never half-written) and a re-run encodes them again.
    """

    def __init__(self, folder: str | Path, config: VQConfig, rank: int = 0, shard_size: int = 4096) -> None:
        self.folder = Path(folder)
        self.config = config
        self.rank = rank
        self.shard_size = shard_size
        self.dtype = token_dtype(config.codebook_size)
        self._ids: list[str] = []
        self._rows: list[np.ndarray] = []
        self._claim_folder()
        self._next_sequence = 1 + max(
            (
                int(m.group(2))
                for p in shard_files(self.folder)
                if (m := SHARD_PATTERN.match(p.name)) and int(m.group(1)) == rank
            ),
            default=-1,
        )

    def _claim_folder(self) -> None:
        """Write vq_config.json, or check that the folder's tokens come from this same tokenizer."""
        if self.folder.exists() and not self.folder.is_dir():
            raise BadInputError(
                self.folder, "exists and is a file, not a token store folder", "give a new or existing folder"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        config_path = self.folder / CONFIG_NAME
        if config_path.is_file():
            existing = load_config(VQConfig, config_path)
            if to_dict(existing) != to_dict(self.config):
                raise BadInputError(
                    self.folder,
                    "this token store holds tokens of a different tokenizer (vq_config.json differs)",
                    "encode into a new folder",
                )
        else:
            save_config(self.config, config_path)

    def existing_ids(self) -> set[str]:
        """Ids already in the folder's shards (any rank): a resumed encode skips them."""
        return set(build_index(self.folder)["images"])

    def add(self, image_id: str, tokens: np.ndarray) -> None:
        """Queue one image's tokens: (num_tokens,) or (grid, grid) integers in [0, codebook_size)."""
        flat = np.asarray(tokens).reshape(-1)
        if flat.size != self.config.num_tokens:
            raise ValueError(f"{image_id}: {flat.size} tokens, expected {self.config.num_tokens}")
        if flat.size and (flat.min() < 0 or flat.max() >= self.config.codebook_size):
            raise ValueError(f"{image_id}: code outside [0, {self.config.codebook_size})")
        self._ids.append(str(image_id))
        self._rows.append(flat.astype(self.dtype))
        if len(self._ids) >= self.shard_size:
            self.flush()

    def add_batch(self, image_ids: list[str], tokens: np.ndarray) -> None:
        """Queue (B, num_tokens) or (B, g, g) tokens of B images."""
        for image_id, row in zip(image_ids, tokens, strict=True):
            self.add(image_id, row)

    def flush(self) -> Path | None:
        """Write the queued rows as one shard (atomically); returns its path, or None if nothing queued."""
        if not self._ids:
            return None
        path = self.folder / shard_name(self.rank, self._next_sequence)
        tokens = np.stack(self._rows)  # (N, num_tokens)
        with atomic.atomic_path(path) as tmp:
            save_file({TOKENS_KEY: tokens}, str(tmp), metadata={"image_ids": json.dumps(self._ids)})
        self._next_sequence += 1
        self._ids, self._rows = [], []
        return path

    def close(self) -> dict[str, Any]:
        """Write the last shard and merge the index; returns the index."""
        self.flush()
        return merge_index(self.folder)

    def __enter__(self) -> TokenStoreWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
            return
        # Interrupted (Ctrl-C, a crash elsewhere): the queued rows are complete, so keep them for the
        # resume; if even that fails, the shards already written stay intact.
        try:
            self.close()
        except Exception:
            pass
