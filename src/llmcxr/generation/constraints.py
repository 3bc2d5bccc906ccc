"""Logits processors that make every generation well-formed by construction.

LLM-CXR's original code samples freely and retries until a sample happens to hold exactly 256 image
tokens. Here the output is valid by construction instead: in image mode every step may only choose
an image token until the block is full, with the prompt layout's frame around it forced (nothing
before and the blank line + ``### End`` after in ours; ``<`` before and ``>``, the blank line and
``### End`` after in the official layout), then end-of-text; in text mode
image tokens (and control tokens that would open a new Dolly turn) are impossible. Both are plain
``transformers.LogitsProcessor`` objects, so they compose with temperature, top-p, top-k, greedy
decoding and seeds, in ``model.generate(logits_processor=...)`` and in ``llmcxr.generation.decode``.

A masked logit is ``-inf``: its probability is exactly 0 after softmax, whatever the temperature,
and top-p/top-k only ever remove further candidates, so the allowed set can never be left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from llmcxr.errors import BadInputError
from llmcxr.model.vocab import CHAT_LAYOUT, LLMCXR_LAYOUT, ImageTokenMap
from llmcxr.prompt.chat import chat_frame
from llmcxr.prompt.dolly import END_KEY, IMAGE_PLACEHOLDER, INSTRUCTION_KEY, RESPONSE_KEY_NL


@dataclass(frozen=True)
class SpecialIds:
    """The token ids decoding needs, read from the tokenizer (never assumed)."""

    end: int  # ``### End``: the Dolly stop token (chat layout: the template's turn end)
    eos: int  # end of text (GPT-NeoX ``<|endoftext|>``)
    pad: int  # padding id (left padding of prompts, filler after a row has stopped)
    instruction: int  # ``### Instruction:``: would open a new turn inside a response (chat: a turn opener)
    response: int  # ``### Response:\n`` (chat: a turn opener)
    placeholder: int | None  # ``<image>`` if the tokenizer has it as one token, else None
    vocab_size: int  # len(tokenizer); embedding rows beyond it (padding to 64) are never real tokens

    @classmethod
    def from_tokenizer(cls, tokenizer, prompt_layout: str = LLMCXR_LAYOUT) -> SpecialIds:
        """The Dolly control tokens; in the chat layout (``llmcxr.prompt.chat``) the template's: its
        turn end as ``end``, the ids that open a turn as ``instruction``/``response``."""

        def token_id(token: str) -> int | None:
            found = tokenizer.convert_tokens_to_ids(token)
            return None if found is None or found == tokenizer.unk_token_id else int(found)

        pad = tokenizer.pad_token_id
        if prompt_layout == CHAT_LAYOUT:
            frame = chat_frame(tokenizer)
            eos = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else frame.end)
            opens = frame.opens_turn or (frame.end,)
            return cls(
                end=frame.end,
                eos=eos,
                pad=int(pad) if pad is not None else eos,
                instruction=opens[0],
                response=opens[-1],
                placeholder=token_id(IMAGE_PLACEHOLDER),
                vocab_size=len(tokenizer),
            )

        controls = {key: token_id(key) for key in (END_KEY, INSTRUCTION_KEY, RESPONSE_KEY_NL)}
        missing = [key for key, found in controls.items() if found is None]
        if missing or tokenizer.eos_token_id is None:
            raise BadInputError(
                "tokenizer",
                f"lacks the Dolly control tokens {missing} or an end-of-text token",
                "use a model folder written by `llmcxr train`",
            )
        eos = int(tokenizer.eos_token_id)
        return cls(
            end=controls[END_KEY],
            eos=eos,
            pad=int(pad) if pad is not None else eos,
            instruction=controls[INSTRUCTION_KEY],
            response=controls[RESPONSE_KEY_NL],
            placeholder=token_id(IMAGE_PLACEHOLDER),
            vocab_size=len(tokenizer),
        )


def _keep_only(scores: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``scores`` (B, V) with every column outside [start, stop) set to -inf."""
    masked = torch.full_like(scores, float("-inf"))
    masked[:, start:stop] = scores[:, start:stop]
    return masked


class ImageTokenConstraint(LogitsProcessor):
    """Image mode: the layout's opening ids, exactly one image block, the closing ids (ending with
    ``### End``), then end-of-text.

    Generation step t (0-based, counted from ``prompt_length``, the padded prompt width), O the
    opening and N the block length: t < O only ``opening[t]`` (the official layout's ``<``); then
    N steps of ids ``first_id .. last_id`` (or the row's marker where one opens a row:
    ``ImageTokenMap.block_allowed``); then ``closing`` one by one (``llmcxr.prompt.image_response_frame``
    gives both); then only end-of-text (a caller that keeps going past the stop token gets filler,
    never another image token). The default closing is ``### End`` alone.
    """

    def __init__(
        self,
        image_tokens: ImageTokenMap,
        special: SpecialIds,
        prompt_length: int,
        opening: Sequence[int] = (),
        closing: Sequence[int] | None = None,
    ) -> None:
        self.image_tokens = image_tokens
        self.special = special
        self.prompt_length = prompt_length
        self.opening = list(opening)
        self.closing = list(closing) if closing is not None else [special.end]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length  # input_ids: (B, prompt_length + step)
        if step < len(self.opening):
            forced = self.opening[step]
            return _keep_only(scores, forced, forced + 1)
        step -= len(self.opening)
        n = self.image_tokens.block_length
        if step < n:
            return _keep_only(scores, *self.image_tokens.block_allowed(step))
        step -= n
        forced = self.closing[step] if step < len(self.closing) else self.special.eos
        return _keep_only(scores, forced, forced + 1)


class TextOnlyConstraint(LogitsProcessor):
    """Text mode: never an image token, the ``<image>`` placeholder, padding, a token that opens a
    new Dolly turn, or an embedding row past the tokenizer; ``### End`` and end-of-text stay allowed."""

    def __init__(self, image_tokens: ImageTokenMap, special: SpecialIds) -> None:
        self.image_tokens = image_tokens
        self.special = special
        self._banned: torch.Tensor | None = None  # (V,) bool, built for the first scores seen

    def banned(self, rows: int, device: torch.device) -> torch.Tensor:
        """(rows,) bool mask of ids text mode never emits."""
        if self._banned is None or self._banned.shape[0] != rows or self._banned.device != device:
            banned = torch.zeros(rows, dtype=torch.bool, device=device)
            banned[self.image_tokens.first_id : self.image_tokens.last_id + 1] = True
            markers = self.image_tokens.row_marker_ids
            banned[markers.start : markers.stop] = True
            banned[self.special.vocab_size :] = True
            extra = [self.special.instruction, self.special.response, self.special.placeholder]
            if self.special.pad not in (self.special.eos, self.special.end):
                extra.append(self.special.pad)
            for token_id in extra:
                if token_id is not None and token_id < rows:
                    banned[token_id] = True
            self._banned = banned
        return self._banned

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.masked_fill(self.banned(scores.shape[-1], scores.device), float("-inf"))
