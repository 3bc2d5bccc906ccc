"""Image tokens in a language model's vocabulary: one added token per VQ codebook entry.

The codebook of the image tokenizer (VQ-GAN) has N entries; the language model gets N new tokens
``<img_0> .. <img_{N-1}>`` with contiguous ids ``first_id .. first_id + N - 1``, so code -> id is
one addition (vectorised over any array). The Dolly control tokens are added as special tokens too,
before the image tokens, as dolly-v2 did. Nothing here assumes a vocabulary size: the original
LLM-CXR code asserted 50,281 (dolly-v2's tokenizer); here every id comes from the tokenizer.

Row markers (optional, ``TrainRecipe.image_row_markers``): g more tokens ``<img_row_0> ..
<img_row_{g-1}>``, one opening each row of the g x g grid, so an image block is g x (1 + g) tokens.
A causal LM with rotary (relative) positions has no direct way to tell where in the grid a code sits;
the marker gives each code its row (the nearest marker before it) and column (the distance to it).
Where a finding is matters as much as which codes show it: on the synthetic world a linear probe on
the codes scores micro-F1-14 0.56 from a bag of codes and 0.74 from codes with their grid positions.
(The shipped 8x8 model did as well without them in a control run: docs/training.md.)

Prompt layouts (``ImageTokenMap.prompt_layout``, recorded in ``image_tokens.json``):
- ``llmcxr`` (the default for models trained here): named special tokens ``<img_c>``, prompts built
  segment by segment (``llmcxr.prompt.examples``);
- ``official``: the layout of the published LLM-CXR checkpoint (``llmcxr convert official``). Image
  tokens have no names: code c is id ``len(tokenizer) + c`` (50,281 + c for dolly-v2's tokenizer),
  ids the tokenizer can never produce from text; an image stands in the ``<image>`` placeholder with
  only its ``image`` token replaced, so a block reads ``<`` + codes + ``>``;
- ``chat``: image tokens as ``llmcxr``, the text in the base's own chat template instead of the Dolly
  text (``llmcxr.prompt.chat``): an instruct base keeps more of its language tuned in its own template.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken

from llmcxr import atomic
from llmcxr.errors import BadInputError

IMAGE_TOKENS_FILE = "image_tokens.json"
LLMCXR_LAYOUT = "llmcxr"
OFFICIAL_LAYOUT = "official"
CHAT_LAYOUT = "chat"
PROMPT_LAYOUTS = (LLMCXR_LAYOUT, OFFICIAL_LAYOUT, CHAT_LAYOUT)
# nanoGPT: "padded up to nearest multiple of 64 for efficiency" (tensor-core friendly matmul shapes).
VOCAB_MULTIPLE = 64


@dataclass(frozen=True)
class ImageTokenMap:
    """Where the image tokens live in a tokenizer's id space."""

    codebook_size: int  # N: number of VQ codes, one token each
    first_id: int  # token id of <img_0>; code c has id first_id + c
    tokens_per_image: int  # VQ codes per image (grid_size**2, 256 in the paper)
    prefix: str = "img"  # token strings are "<{prefix}_{code}>"
    row_marker_first_id: int | None = None  # id of <{prefix}_row_0>; None = no row markers
    prompt_layout: str = LLMCXR_LAYOUT  # how prompts are laid out: "llmcxr", "official", "chat" (module doc)

    def __post_init__(self) -> None:
        if self.prompt_layout not in PROMPT_LAYOUTS:
            raise BadInputError(
                IMAGE_TOKENS_FILE, f"unknown prompt_layout {self.prompt_layout!r}", f"one of {PROMPT_LAYOUTS}"
            )
        if self.is_official and self.row_marker_first_id is not None:
            raise BadInputError(IMAGE_TOKENS_FILE, "the official layout has no row markers")

    @property
    def is_official(self) -> bool:
        """Unnamed id-offset image tokens in a ``<``...``>`` wrapper, whole-segment tokenization."""
        return self.prompt_layout == OFFICIAL_LAYOUT

    @property
    def last_id(self) -> int:
        return self.first_id + self.codebook_size - 1

    @property
    def last_block_id(self) -> int:
        """The highest id an image block can hold (the last row marker where there are markers)."""
        return max([self.last_id, *self.row_marker_ids])

    @property
    def row_marker_ids(self) -> range:
        """Ids of the row markers, row 0 first (empty without markers)."""
        if self.row_marker_first_id is None:
            return range(0)
        return range(self.row_marker_first_id, self.row_marker_first_id + self.grid_size)

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.tokens_per_image)

    @property
    def has_row_markers(self) -> bool:
        return self.row_marker_first_id is not None

    @property
    def block_length(self) -> int:
        """Tokens of one image block: the codes, plus one marker per row where the model has them."""
        return self.tokens_per_image + len(self.row_marker_ids)

    def row_marker(self, row: int) -> str:
        return f"<{self.prefix}_row_{row}>"

    def row_markers(self) -> list[str]:
        return [self.row_marker(r) for r in range(self.grid_size)] if self.has_row_markers else []

    def token(self, code: int) -> str:
        return f"<{self.prefix}_{code}>"

    def tokens(self) -> list[str]:
        return [self.token(c) for c in range(self.codebook_size)]

    def codes_to_ids(self, codes: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """VQ codes (any shape, ints in [0, N)) -> token ids of the same shape and kind."""
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise BadInputError(
                "image tokens",
                f"codes outside [0, {self.codebook_size})",
                "the token store and the VQ config differ",
            )
        return codes + self.first_id

    def ids_to_codes(self, ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Token ids (any shape, all image tokens) -> VQ codes of the same shape and kind."""
        if not bool(self.is_image_id(ids).all()):
            raise BadInputError("token ids", "some ids are not image tokens", "select the image block first")
        return ids - self.first_id

    def is_image_id(self, ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Boolean mask, same shape as ``ids``: which ids are image tokens."""
        return (ids >= self.first_id) & (ids <= self.last_id)

    def is_block_id(self, ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Boolean mask: which ids belong in an image block (image tokens and row markers)."""
        markers = self.row_marker_ids
        return self.is_image_id(ids) | ((ids >= markers.start) & (ids < markers.stop))

    def block_ids(self, codes: np.ndarray) -> np.ndarray:
        """One image's VQ codes ((tokens_per_image,) or (g, g), row-major) -> its block of token ids
        ((block_length,) int64), each row opened by its marker where the model has markers."""
        ids = np.asarray(self.codes_to_ids(np.asarray(codes, dtype=np.int64))).reshape(self.grid_size, -1)
        if self.has_row_markers:
            markers = np.array(self.row_marker_ids, dtype=np.int64)[:, None]
            ids = np.concatenate([markers, ids], axis=1)
        return ids.reshape(-1)

    def block_codes(self, ids: np.ndarray) -> np.ndarray:
        """Image blocks ((..., block_length) ids) -> VQ codes (..., tokens_per_image): the inverse of
        ``block_ids``. BadInputError unless every row marker is where it belongs."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape[-1] != self.block_length:
            raise BadInputError(
                "image block",
                f"{ids.shape[-1]} tokens, expected {self.block_length}",
                "select one image block",
            )
        if self.has_row_markers:
            rows = ids.reshape(*ids.shape[:-1], self.grid_size, self.grid_size + 1)
            if not bool((rows[..., 0] == np.array(self.row_marker_ids)).all()):
                raise BadInputError("image block", "row markers missing or out of order")
            ids = rows[..., 1:].reshape(*ids.shape[:-1], self.tokens_per_image)
        return self.ids_to_codes(ids)

    def block_allowed(self, step: int) -> tuple[int, int]:
        """[start, stop) of the ids allowed at position ``step`` (< block_length) of an image block:
        the row's marker where one opens a row, else any image token."""
        if self.has_row_markers and step % (self.grid_size + 1) == 0:
            marker = self.row_marker_ids[step // (self.grid_size + 1)]
            return marker, marker + 1
        return self.first_id, self.last_id + 1

    def save(self, folder: Path) -> None:
        atomic.write_json(Path(folder) / IMAGE_TOKENS_FILE, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> ImageTokenMap:
        path = Path(folder) / IMAGE_TOKENS_FILE
        if not path.is_file():
            raise BadInputError(
                folder, f"no {IMAGE_TOKENS_FILE}: not an llmcxr model folder", "train one with `llmcxr train`"
            )
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as err:
            raise BadInputError(path, f"broken image-token map: {err}") from None

    def check(self, tokenizer) -> None:
        """Raise unless ``tokenizer`` maps every <img_c> to first_id + c (official layout: unless every
        image id lies past the tokenizer, where no text can reach it)."""
        if self.is_official:
            if len(tokenizer) > self.first_id:
                raise BadInputError(
                    "tokenizer",
                    f"has {len(tokenizer)} tokens: text could produce image ids from {self.first_id}",
                    "use the tokenizer the official checkpoint was trained with",
                )
            return
        ids = tokenizer.convert_tokens_to_ids(self.tokens())
        if ids != list(range(self.first_id, self.first_id + self.codebook_size)):
            raise BadInputError(
                "tokenizer", "image tokens are missing or not contiguous", "re-create the model folder"
            )
        if tokenizer.convert_tokens_to_ids(self.row_markers()) != list(self.row_marker_ids):
            raise BadInputError(
                "tokenizer",
                "image row markers are missing or not contiguous",
                "re-create the model folder",
            )


def add_cxr_tokens(
    tokenizer,
    codebook_size: int,
    tokens_per_image: int,
    control_tokens: Sequence[str],
    prefix: str = "img",
    row_markers: bool = False,
) -> ImageTokenMap:
    """Add ``control_tokens`` (special) and one special token per code to ``tokenizer`` in place,
    and with ``row_markers`` one marker per grid row after them.

    Image tokens are special added tokens (never split, never normalised): user text tokenized with
    ``split_special_tokens=True`` can then never produce one. Idempotent: a tokenizer that already
    has them (a saved llmcxr folder) gets nothing new and the same map back; a tokenizer that already
    has row markers keeps them (a model trained with markers reads images only with them).
    """
    missing = [t for t in control_tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    image = [f"<{prefix}_{c}>" for c in range(codebook_size)]
    vocab = tokenizer.get_vocab()
    if image[0] not in vocab:
        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in image], special_tokens=True
        )
    mapping = ImageTokenMap(
        codebook_size, tokenizer.convert_tokens_to_ids(image[0]), tokens_per_image, prefix
    )
    markers = [mapping.row_marker(r) for r in range(mapping.grid_size)]
    if markers[0] in tokenizer.get_vocab() or row_markers:
        if mapping.grid_size**2 != tokens_per_image:
            raise BadInputError("image tokens", f"{tokens_per_image} tokens per image is not a square grid")
        if markers[0] not in tokenizer.get_vocab():
            tokenizer.add_tokens(
                [AddedToken(t, special=True, normalized=False) for t in markers], special_tokens=True
            )
        mapping = replace(mapping, row_marker_first_id=tokenizer.convert_tokens_to_ids(markers[0]))
    mapping.check(tokenizer)
    return mapping


def official_image_tokens(tokenizer, codebook_size: int, tokens_per_image: int) -> ImageTokenMap:
    """The published LLM-CXR's image ids: code c is ``len(tokenizer) + c`` (its ``CXR_VQ_TOKENIZER_LEN``
    offset), no token names; the tokenizer is left as it is."""
    return ImageTokenMap(codebook_size, len(tokenizer), tokens_per_image, prompt_layout=OFFICIAL_LAYOUT)


def _init_new_rows(
    weight: torch.Tensor, new_ids: torch.Tensor, old_rows: int, generator: torch.Generator
) -> None:
    """Rows ``new_ids`` of ``weight`` (V, D) := mean of the first ``old_rows`` rows + noise of 1/10 their std.

    Mean initialisation keeps the new tokens' logits close to the average logit, so the model does
    not start out predicting (or being derailed by) them (Hewitt, "Initializing new word embeddings
    for pretrained language models", 2021); the small noise breaks the symmetry between the N image
    tokens so they can be told apart from the first step.
    """
    old = weight[:old_rows].float()
    mean, std = old.mean(0), old.std(0)
    noise = torch.randn(len(new_ids), weight.shape[1], generator=generator) * std * 0.1
    weight[new_ids] = (mean + noise).to(weight.dtype)


@torch.no_grad()
def resize_for_tokenizer(model, tokenizer, old_vocab_size: int, seed: int = 0) -> None:
    """Grow ``model``'s embeddings to cover ``tokenizer`` (padded to a multiple of 64), then
    initialise every id >= ``old_vocab_size`` (the tokens added since) as in ``_init_new_rows``.

    The rows padding the matrix to a multiple of 64 (never a token's) are initialised the same way.
    ``old_vocab_size`` is len(tokenizer) before tokens were added. Pretrained checkpoints often have
    more embedding rows than tokens (pythia: 50,304 rows, 50,277 tokens); new ids that land in those
    unused rows are initialised too, which ``resize_token_embeddings(mean_resizing=True)`` alone
    would not do.
    """
    weight = model.get_input_embeddings().weight
    rows = getattr(weight, "ds_shape", weight.shape)[0]  # ZeRO-3 holds a shape-(0,) shard between uses
    wanted = max(rows, len(tokenizer))
    model.resize_token_embeddings(wanted, pad_to_multiple_of=VOCAB_MULTIPLE, mean_resizing=False)
    inputs = model.get_input_embeddings().weight
    grown = getattr(inputs, "ds_shape", inputs.shape)[0]
    # The rows that pad the matrix to a multiple of 64 are new too: seeded like the rest, not left to
    # the global RNG (which a sharded load draws from differently: ZeRO-3 losses left one process's).
    new_ids = torch.tensor(
        sorted({*range(old_vocab_size, len(tokenizer)), *range(rows, grown)}), dtype=torch.long
    )
    if len(new_ids) == 0:
        return
    generator = torch.Generator().manual_seed(seed)
    output = model.get_output_embeddings()
    untied = output is not None and output.weight is not inputs
    with _whole([inputs, *([output.weight] if untied else [])]):
        _init_new_rows(inputs, new_ids, old_vocab_size, generator)
        if untied:
            _init_new_rows(output.weight, new_ids, old_vocab_size, generator)


def _whole(weights: list[torch.Tensor]):
    """Where DeepSpeed ZeRO-3 sharded the weights as they loaded: gather them whole to change them
    (rank 0's change is kept), shard them again after. Otherwise nothing to do."""
    if not any(hasattr(w, "ds_id") for w in weights):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(weights, modifier_rank=0)
