"""A causal convolution stem over the image-token grid, inside any Hugging Face causal LM.

The LM reads an image as a flat row-major run of codes; with rotary positions the code above a code
is ``g`` (or ``g + 1`` with row markers) tokens back and nothing marks it as a neighbour. Small
transformers over the flat codes read findings worse than a CNN over the grid (micro-F1-14 0.753 vs
0.842 on the synthetic test split), and two masked 3x3 convolutions over the grid of code embeddings
before them close most of that gap (0.830; ``experiments/reading-ceiling/token_reading_ceiling.py --stem``).

The stem does that for the LM: every placed image code's input embedding gets a residual from
convolutions that see only the row above and the codes to its left (PixelCNN's type-B mask). That is
at or before it in raster order, so the model stays causal and images are still generated token by
token. Non-image tokens are untouched, and the output projection starts at zero: a stem added to a
trained model leaves its function unchanged at step 0.

It runs as a forward hook on the input embeddings, so training, scoring and prefill need no change.
A KV-cached decoding step sees one new token only: ``embed_last_with_stem`` embeds it from the block
around it, and the step passes that as ``inputs_embeds`` (``llmcxr.generation.decode``). Its weights are
``grid_stem.safetensors`` and its config ``grid_stem.json``, beside the LM's own files: a plain
``AutoModelForCausalLM.from_pretrained`` loads the LM without the stem (which then reads images less
well); ``llmcxr.model.load_llmcxr_folder`` loads both. transformers' own ``generate`` with a KV cache
would feed the embeddings one id per step, so drawn codes would miss their stem: generate through
``llmcxr.generation`` (``LLMCXR``), which does not.

With ``summary_layers`` the stem also reads each complete image whole (``BlockSummary``): unmasked
convolutions over the block, pooled into the token after it, where the text that follows can attend.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from llmcxr import atomic
from llmcxr.errors import BadInputError
from llmcxr.model.vocab import ImageTokenMap

GRID_STEM_FILE = "grid_stem.json"
GRID_STEM_WEIGHTS = "grid_stem.safetensors"
STEM_ATTRIBUTE = "grid_stem"  # the submodule's name on the causal LM (its weights' key prefix)
# (row offset, column offset) of the taps of a 3x3 type-B mask: the row above and the code to the left,
# and the code itself.
TAPS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0))


@dataclass(frozen=True)
class GridStemConfig:
    """Shape of the stem; saved as ``grid_stem.json`` next to the weights."""

    layers: int = 2  # masked 3x3 convolutions (receptive field: ``layers`` rows up)
    width: int | None = None  # channels inside the stem; None = the LM's hidden size, at most 256
    # Unmasked 3x3 convolutions over each complete image block, pooled into the embedding of the token
    # after it (``BlockSummary``); 0 = none.
    summary_layers: int = 0
    summary_width: int | None = None  # channels of the summary; None = the stem's width

    def save(self, folder: Path) -> None:
        atomic.write_json(Path(folder) / GRID_STEM_FILE, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> GridStemConfig | None:
        """The folder's stem config, or None where the model has no stem."""
        path = Path(folder) / GRID_STEM_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as err:
            raise BadInputError(path, f"broken grid-stem config: {err}", "re-export the model") from None


def _shift(x: torch.Tensor, offset: int) -> torch.Tensor:
    """x[:, t - offset] at t (zeros where t < offset), for x of shape (B, T, ...)."""
    if offset == 0:
        return x
    return torch.cat([torch.zeros_like(x[:, :offset]), x[:, :-offset]], dim=1)


class BlockSummary(nn.Module):
    """The whole image at once, for the text after it: unmasked convolutions over a complete block's
    code grid, mean- and max-pooled, added to the input embedding of the token right after the block.

    That token comes after every code of the block, so it may read all of them: the model stays causal
    while a report (or an answer) attends to a CNN's reading of the image, which the reader benchmark
    found better than any causal reading of the flat codes (0.842 vs 0.830 with the masked stem).
    """

    def __init__(self, hidden_size: int, width: int, image_tokens: ImageTokenMap, layers: int) -> None:
        super().__init__()
        g = image_tokens.grid_size
        markers = 1 if image_tokens.has_row_markers else 0
        self.image_tokens, self.grid = image_tokens, g
        rows = torch.arange(g).repeat_interleave(g)
        cols = torch.arange(g).repeat(g)
        # Offset of cell (r, c) from the token after its block, row-major: the block ends just before it.
        offsets = rows * (g + markers) + cols + markers - image_tokens.block_length
        self.register_buffer("cell_offsets", offsets, persistent=False)
        self.register_buffer("cell_rows", rows, persistent=False)
        self.register_buffer("cell_cols", cols, persistent=False)
        self.into = nn.Linear(hidden_size, width, bias=False)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(layers))
        self.out = nn.Linear(2 * width, hidden_size, bias=False)
        nn.init.zeros_(self.out.weight)  # function-preserving when added to a trained model

    def blocks(
        self, input_ids: torch.Tensor, placed: torch.Tensor, row: torch.Tensor, col: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch, position, cells): each token that follows a complete block, and the (N,
        tokens_per_image) positions of that block's cells, row-major."""
        after = ~self.image_tokens.is_block_id(input_ids) & _shift(placed, 1)
        after[:, : self.image_tokens.block_length] = False  # too early for a whole block before it
        batch, position = after.nonzero(as_tuple=True)
        cells = position[:, None] + self.cell_offsets[None]
        rows = batch[:, None].expand_as(cells)
        complete = (
            placed[rows, cells] & (row[rows, cells] == self.cell_rows) & (col[rows, cells] == self.cell_cols)
        ).all(dim=1)
        return batch[complete], position[complete], cells[complete]

    def forward(self, input_ids, embeddings, placed, row, col, stemmed) -> torch.Tensor:
        """``stemmed`` with each complete block's summary added at the token after it; the summary reads
        the block's ``embeddings`` (before the stem)."""
        batch, position, cells = self.blocks(input_ids, placed, row, col)
        if batch.numel() == 0:
            return stemmed
        summaries = self.out(self.pool(self.read(embeddings[batch[:, None], cells])))
        return stemmed.index_put((batch, position), summaries.to(stemmed.dtype), accumulate=True)

    def read(self, cell_embeddings: torch.Tensor) -> torch.Tensor:
        """(N, cells, hidden) input embeddings of blocks' codes, row-major -> (N, width, g, g) features."""
        h = (
            self.into(cell_embeddings.to(self.into.weight.dtype))
            .transpose(1, 2)
            .reshape(len(cell_embeddings), -1, self.grid, self.grid)
        )
        for conv in self.convs:
            h = nn.functional.gelu(conv(h))
        return h

    @staticmethod
    def pool(features: torch.Tensor) -> torch.Tensor:
        """(N, width, g, g) -> (N, 2 * width): mean and max over the grid."""
        return torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)


class GridStem(nn.Module):
    """Masked 3x3 convolutions over the image codes of a token sequence, added to their embeddings."""

    def __init__(self, hidden_size: int, image_tokens: ImageTokenMap, config: GridStemConfig) -> None:
        super().__init__()
        if config.layers < 1 or config.summary_layers < 0:
            raise BadInputError(
                "grid stem",
                f"layers must be >= 1 and summary_layers >= 0, got {config}",
                "fix model.grid_stem",
            )
        width = config.width or min(hidden_size, 256)
        self.image_tokens, self.config = image_tokens, config
        self.grid = image_tokens.grid_size
        self.row_stride = self.grid + (1 if image_tokens.has_row_markers else 0)
        self.into = nn.Linear(hidden_size, width, bias=False)
        self.convs = nn.ModuleList(nn.Linear(len(TAPS) * width, width) for _ in range(config.layers))
        self.out = nn.Linear(width, hidden_size, bias=False)
        nn.init.zeros_(self.out.weight)  # function-preserving when added to a trained model
        self.summary = (
            BlockSummary(hidden_size, config.summary_width or width, image_tokens, config.summary_layers)
            if config.summary_layers
            else None
        )

    def placement(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(placed, row, col), each (B, T): which ids are image codes at a known grid cell, and where.

        With row markers a code's row is its block's latest marker and its column the distance to it;
        without, its place in the run of consecutive codes (runs of tokens_per_image from its start).
        """
        ids = input_ids
        t = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        code = self.image_tokens.is_image_id(ids)
        last_other = torch.where(code, -1, t).cummax(dim=1).values  # latest non-code position
        if self.image_tokens.has_row_markers:
            first = self.image_tokens.row_marker_first_id
            marker = (ids >= first) & (ids < first + self.grid)
            # The latest non-code before a code must be its row's marker (not text, not a pad).
            marker_at = torch.gather(marker, 1, last_other.clamp(min=0)) & (last_other >= 0)
            row = torch.gather(ids, 1, last_other.clamp(min=0)) - first
            col = t - last_other - 1
            placed = code & marker_at & (col < self.grid)
        else:
            k = (t - last_other - 1) % self.image_tokens.tokens_per_image
            row, col, placed = k // self.grid, k % self.grid, code
        return placed, row, col

    def forward(self, input_ids: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        placed, row, col = self.placement(input_ids)
        if not bool(placed.any()):
            return embeddings
        valid = []  # per tap: the neighbour exists, is placed, and is the cell the tap names
        for dr, dc in TAPS:
            offset = -dr * self.row_stride - dc
            valid.append(
                placed
                & _shift(placed, offset)
                & (_shift(row, offset) == row + dr)
                & (_shift(col, offset) == col + dc)
            )
        # The stem may be fp32 beside a bf16 LM (trained beside a frozen bf16 LoRA base).
        keep = placed.unsqueeze(-1).to(self.into.weight.dtype)
        h = self.into(embeddings.to(self.into.weight.dtype)) * keep
        for i, conv in enumerate(self.convs):
            taps = [
                _shift(h, -dr * self.row_stride - dc) * ok.unsqueeze(-1).to(h.dtype)
                for (dr, dc), ok in zip(TAPS, valid, strict=True)
            ]
            h = conv(torch.cat(taps, dim=-1)) * keep
            h = nn.functional.gelu(h) if i < len(self.convs) - 1 else h
        stemmed = embeddings + self.out(h).to(embeddings.dtype)
        if self.summary is not None:
            stemmed = self.summary(input_ids, embeddings, placed, row, col, stemmed)
        return stemmed


def grid_stem_of(model: nn.Module) -> GridStem | None:
    """The stem attached to a causal LM (not a peft wrapper of one), or None."""
    stem = getattr(model, STEM_ATTRIBUTE, None)
    return stem if isinstance(stem, GridStem) else None


def attach_grid_stem(model: nn.Module, image_tokens: ImageTokenMap, config: GridStemConfig) -> GridStem:
    """Give a causal LM a new stem (zero output: the model computes what it did) and hook it into the
    input embeddings. Call once per model object."""
    if hasattr(model, STEM_ATTRIBUTE):
        raise BadInputError("model", "already has a grid stem")
    weight = model.get_input_embeddings().weight
    stem = GridStem(weight.shape[1], image_tokens, config).to(device=weight.device, dtype=weight.dtype)
    setattr(model, STEM_ATTRIBUTE, stem)
    # Saved beside the LM's weights, not in them: a plain from_pretrained then loads the LM cleanly.
    ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    model._keys_to_ignore_on_save = ignored | {f"{STEM_ATTRIBUTE}.{k}" for k in stem.state_dict()}

    def add_stem(module, args, output):
        # Looked up at call time: peft's modules_to_save swaps the attribute for a wrapper.
        return getattr(model, STEM_ATTRIBUTE)(args[0], output)

    model.get_input_embeddings().register_forward_hook(add_stem)
    return stem


def embed_last_with_stem(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, hidden): the input embedding of each row's last token, with the stem's residual where it
    is an image code. Only the last block's worth of tokens is embedded (plus the one before it, which
    places a run of codes without markers): the stem reads nothing from further back."""
    span = grid_stem_of(model).image_tokens.block_length + 1
    return model.get_input_embeddings()(input_ids[:, -span:])[:, -1:]


def save_grid_stem(model: nn.Module, folder: Path) -> None:
    """Write the model's stem (if it has one) as ``grid_stem.safetensors`` + ``grid_stem.json``."""
    stem = grid_stem_of(model)
    if stem is None:
        return
    state = {k: v.detach().cpu().contiguous() for k, v in stem.state_dict().items()}
    atomic.write_bytes(Path(folder) / GRID_STEM_WEIGHTS, save(state, metadata={"format": "pt"}))
    stem.config.save(folder)


def load_grid_stem(model: nn.Module, image_tokens: ImageTokenMap, folder: Path) -> GridStem | None:
    """Attach and load the stem a saved folder has (``grid_stem.json``); None where it has none."""
    config = GridStemConfig.load(folder)
    if config is None:
        return None
    stem = attach_grid_stem(model, image_tokens, config)
    load_grid_stem_weights(stem, folder)
    return stem


@torch.no_grad()
def load_grid_stem_weights(stem: GridStem, folder: Path) -> None:
    """Load ``folder/grid_stem.safetensors`` into an attached stem (resuming a training checkpoint)."""
    path = Path(folder) / GRID_STEM_WEIGHTS
    if not path.is_file():
        raise BadInputError(folder, f"has no {GRID_STEM_WEIGHTS}", "give a folder saved with its grid stem")
    try:
        stem.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as err:
        raise BadInputError(
            path, f"weights do not fit {GRID_STEM_FILE}: {err}", "re-export the model"
        ) from None
