"""Sequence packing: several examples per row so no compute goes to padding.

How attention stays inside each example: a packed row carries ``position_ids`` that restart at 0
for every example and no ``attention_mask``. transformers (``masking_utils.find_packed_sequence_indices``)
reads the restarts and builds a block-diagonal causal mask for sdpa/eager attention, and
flash-attention-2 turns them into varlen ``cu_seqlens``; rotary positions restart too. So a packed
example sees exactly what it would see alone (``tests/test_training.py`` checks the logits match).
Labels need no care at the seams: every example starts with its (unscored, -100) prompt, so no
token is ever trained to predict the next example.

Rows are filled first-fit-decreasing (longest example first into the first row with room), which
typically fills rows to >95% for instruction data of mixed lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmcxr.prompt.examples import IGNORE_INDEX, Example


@dataclass
class PackedRow:
    """One training row: examples laid end to end. All lists have the same length (<= max_length)."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    task_ids: list[int]  # index into the task list per token (-1: padding), for per-task losses


def pack_examples(examples: Sequence[Example], max_length: int, tasks: Sequence[str]) -> list[PackedRow]:
    """First-fit-decreasing bins of total length <= max_length; an example longer than max_length is an error
    (the example builder drops or shortens those)."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    rooms = _Rooms(len(examples), max_length)
    bins: list[list[int]] = []
    for i in order:
        size = len(examples[i].input_ids)
        if size > max_length:
            raise ValueError(f"example of {size} tokens is longer than max_length={max_length}")
        b = rooms.take_first_fit(size)  # a bin not opened yet is an empty one: b == len(bins) opens it
        if b == len(bins):
            bins.append([])
        bins[b].append(i)
    rows: list[PackedRow] = []
    for members in sorted(bins, key=min):  # keep the (shuffled) input order roughly
        row = PackedRow([], [], [], [])
        for i in members:
            ex = examples[i]
            row.input_ids += ex.input_ids
            row.labels += ex.labels
            row.position_ids += list(range(len(ex.input_ids)))
            row.task_ids += [tasks.index(ex.task)] * len(ex.input_ids)
        rows.append(row)
    return rows


class _Rooms:
    """Free room of ``count`` bins in a max-tree: the first bin with room for a size in O(log count),
    where scanning the bins one by one made packing quadratic (minutes for 10^5 examples)."""

    def __init__(self, count: int, capacity: int) -> None:
        self.leaves = 1
        while self.leaves < max(count, 1):
            self.leaves *= 2
        self.tree = [capacity] * (2 * self.leaves)

    def take_first_fit(self, size: int) -> int:
        node = 1
        while node < self.leaves:  # descend to the leftmost child whose subtree has room
            node = 2 * node if self.tree[2 * node] >= size else 2 * node + 1
        self.tree[node] -= size
        b = node - self.leaves
        node //= 2
        while node:
            self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])
            node //= 2
        return b


def single_rows(examples: Sequence[Example], tasks: Sequence[str]) -> list[PackedRow]:
    """One example per row (no packing): the padded baseline."""
    return [
        PackedRow(
            ex.input_ids,
            ex.labels,
            list(range(len(ex.input_ids))),
            [tasks.index(ex.task)] * len(ex.input_ids),
        )
        for ex in examples
    ]


def _pad(values: list[int], length: int, fill: int) -> list[int]:
    return values + [fill] * (length - len(values))


@dataclass
class RowCollator:
    """Rows -> a batch padded to the longest row (rounded up to ``pad_to_multiple_of``).

    ``packed=True``: the batch has ``position_ids`` (restarting per example) and no attention_mask,
    padding is one more "example" whose positions restart at 0 and whose labels are -100.
    ``packed=False``: the classic padded batch, ``attention_mask`` marks the padding.
    Shapes: every tensor is (batch, length); ``task_ids`` is -1 on padding.
    """

    pad_token_id: int
    packed: bool
    pad_to_multiple_of: int = 8

    def __call__(self, rows: Sequence[PackedRow | dict]) -> dict[str, torch.Tensor]:
        rows = [r if isinstance(r, PackedRow) else PackedRow(**r) for r in rows]
        longest = max(len(r.input_ids) for r in rows)
        length = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {
            "input_ids": torch.tensor([_pad(r.input_ids, length, self.pad_token_id) for r in rows]),
            "labels": torch.tensor([_pad(r.labels, length, IGNORE_INDEX) for r in rows]),
            "task_ids": torch.tensor([_pad(r.task_ids, length, -1) for r in rows]),
        }
        if self.packed:
            batch["position_ids"] = torch.tensor(
                [r.position_ids + list(range(length - len(r.position_ids))) for r in rows]
            )
        else:
            batch["attention_mask"] = torch.tensor([_pad([1] * len(r.input_ids), length, 0) for r in rows])
        return batch
