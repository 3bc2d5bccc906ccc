"""Recipe data sources -> CXR records, and the token stores that hold their images' codes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmcxr.errors import BadInputError
from llmcxr.records import CXRRecord
from llmcxr.training.config import DataSource


def read_source(source: DataSource) -> list[CXRRecord]:
    """The records of one recipe data source (``limit`` applied)."""
    path = Path(source.path)
    if not path.exists():
        raise BadInputError(path, f"{source.kind} data not found", "check `data[].path` in the recipe")
    if source.kind == "synthetic":
        from llmcxr.datasets.synthetic import read_synthetic_world

        records = read_synthetic_world(path)
    elif source.kind == "mimic":
        from llmcxr.datasets.mimic import read_mimic

        records = read_mimic(path)
    elif source.kind == "iu_xray":
        from llmcxr.datasets.iu_xray import iu_records

        # One record per image: views are not in the XML, so the token store (the frontal images
        # that were encoded) decides which are used.
        records = iu_records(path, per_image=True)
    else:
        from llmcxr.datasets.manifest import read_manifest

        records = read_manifest(path)
    return records[: source.limit] if source.limit is not None else records


class TokenStores:
    """Several token stores looked up as one (``in`` and ``get`` by image id), checked to agree on
    the VQ config (the same codebook size and grid)."""

    def __init__(self, stores: Sequence) -> None:
        if not stores:
            raise BadInputError("recipe", "no token store", "add `token_store` to each data source")
        self.stores = list(stores)
        first = self.stores[0].config
        for store in self.stores[1:]:
            if (store.config.codebook_size, store.config.num_tokens) != (
                first.codebook_size,
                first.num_tokens,
            ):
                raise BadInputError(
                    "recipe", "token stores come from different VQ configs", "encode all with one VQ-GAN"
                )

    @property
    def config(self):
        return self.stores[0].config

    def __contains__(self, image_id: str) -> bool:
        return any(image_id in s for s in self.stores)

    def get(self, image_id: str) -> np.ndarray:
        for store in self.stores:
            if image_id in store:
                return store.get(image_id)
        raise KeyError(image_id)


def open_token_stores(sources: Sequence[DataSource]) -> TokenStores:
    from llmcxr.vq import TokenStore

    stores = []
    for source in sources:
        if not Path(source.token_store).is_dir():
            raise BadInputError(
                source.token_store, "token store not found", "run `llmcxr vq encode` on the images first"
            )
        stores.append(TokenStore(source.token_store))
    return TokenStores(stores)


def image_codes_and_reports(
    sources: Sequence[DataSource], splits: Sequence[str], held_out_items: int | None = None
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """{split: ((n, grid, grid) image codes, their n reports)} over a recipe's data sources, for models
    that read findings from codes. The train split comes from every source; held-out splits only from
    the first (the world that evaluation scores), its first ``held_out_items`` records."""
    stores = open_token_stores(sources)
    grid = stores.config.grid_size
    codes: dict[str, list[np.ndarray]] = {split: [] for split in splits}
    reports: dict[str, list[str]] = {split: [] for split in splits}
    for number, source in enumerate(sources):
        for record in read_source(source):
            if record.split not in codes:
                continue
            held_out = record.split != "train"
            if held_out and (number > 0 or len(codes[record.split]) == held_out_items):
                continue
            # each source's own store: image ids need not be unique across worlds
            codes[record.split].append(
                np.asarray(stores.stores[number].get(record.image_id)).reshape(grid, grid)
            )
            reports[record.split].append(record.report)
    for split in splits:
        if not codes[split]:
            raise BadInputError(sources[0].path, f"no {split} images", "give a recipe whose data has them")
    return {split: (np.stack(codes[split]).astype(np.int64), reports[split]) for split in splits}
