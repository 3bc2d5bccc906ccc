"""Prompt parts + image codes -> token ids and labels, with the loss on the response only.

Token ids are assembled segment by segment instead of tokenizing one formatted string:
- every piece of text (the intro, instructions, reports, questions, Dolly items) is tokenized with
  ``split_special_tokens=True``, so text that spells ``### End`` or ``<img_5>`` stays plain text
  and can never become a control or image token (prompt injection, or a report that quotes one);
- the three Dolly control tokens and the image block are inserted by id.
``tokenizer.decode`` of the ids gives back ``format_prompt(parts)`` byte for byte, with the image
block written as its ``<img_k>`` tokens in place of ``<image>``.

Labels are -100 up to and including ``### Response:\\n`` (as dolly's DataCollatorForCompletionOnlyLM)
and equal the ids after it: the response, the blank line and ``### End``, so the model learns to stop.

The chat layout (``prompt_layout == "chat"``, ``llmcxr.prompt.chat``) puts the same pieces in the base's
own template: its ids before the instruction, the input after a blank line, its ids between the turns,
the response and the template's end-of-turn token (scored: the model learns to stop).

The official layout (``ImageTokenMap.prompt_layout == "official"``, the published LLM-CXR model)
tokenizes as its code did: the whole prompt string at once. A tokenizer splits a string at its added
special tokens before anything else, so that is the same as tokenizing each stretch of text between two
control tokens as one piece, which is what ``_official_ids`` does (still with
``split_special_tokens=True`` inside the stretch, so user text stays text). Inside a stretch,
``\\n\\nInput:`` becomes two newline tokens, not the merged blank-line token that piecewise
tokenization gives. The ``<image>`` placeholder stays in the string; only its ``image`` token is
replaced by the codes (hyn2028/llm-cxr ``get_inject_vq_fun``), so a block reads ``<`` + codes + ``>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from llmcxr.model.vocab import CHAT_LAYOUT, ImageTokenMap
from llmcxr.prompt.chat import chat_frame
from llmcxr.prompt.dolly import (
    END_KEY,
    IMAGE_PLACEHOLDER,
    INPUT_KEY,
    INSTRUCTION_KEY,
    INTRO_BLURB,
    RESPONSE_KEY_NL,
    PromptParts,
    parse_prompt,
)

IGNORE_INDEX = -100  # torch CrossEntropyLoss ignore_index, the HF convention for unscored positions
Field = Literal["input", "response"]
# A report shortened below this many tokens says too little to train on: the sample is dropped.
MIN_REPORT_TOKENS = 8


@dataclass
class Example:
    """One tokenized sample. ``input_ids`` and ``labels`` have the same length."""

    input_ids: list[int]
    labels: list[int]
    task: str = ""
    shortened: bool = False  # the report was cut to fit max_length


def _text_ids(tokenizer, text: str) -> list[int]:
    """User or template text -> ids that can contain no special (control or image) token."""
    if not text:
        return []
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _control_id(tokenizer, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise KeyError(f"tokenizer lacks the Dolly control token {token!r}: call add_cxr_tokens first")
    return token_id


def _field_ids(tokenizer, text: str, is_image: bool, image_ids: list[int]) -> list[int]:
    return list(image_ids) if is_image else _text_ids(tokenizer, text)


def encode_parts(
    parts: PromptParts,
    tokenizer,
    image_tokens: ImageTokenMap,
    image_codes: np.ndarray | None = None,
    image_field: Field | None = None,
    max_length: int | None = None,
    shorten_field: Field | None = None,
    task: str = "",
) -> Example | None:
    """Token ids and labels for ``parts``; None when it cannot fit ``max_length``.

    ``image_field`` names the part (holding ``<image>``) that becomes the block of ``image_codes``
    (shape (tokens_per_image,) or the (g, g) grid, row-major). Over ``max_length``, the text part
    ``shorten_field`` (the report) loses tokens from its end; an image block is never cut. When
    that is not enough (or nothing may be shortened) the sample is dropped: None.
    A generation prompt (``parts.response is None``) ends after ``### Response:\\n``.
    """
    image_ids: list[int] = []
    if image_field is not None:
        if image_codes is None or getattr(parts, image_field) != IMAGE_PLACEHOLDER:
            raise ValueError(
                f"image_field={image_field!r} needs image_codes and {IMAGE_PLACEHOLDER} in that part"
            )
        codes = np.asarray(image_codes).reshape(-1)
        if codes.size != image_tokens.tokens_per_image:
            raise ValueError(f"an image has {image_tokens.tokens_per_image} tokens, got {codes.size}")
        image_ids = image_tokens.block_ids(codes).tolist()
    if image_tokens.is_official:
        return _encode_official(parts, tokenizer, image_ids, image_field, max_length, shorten_field, task)

    given: list[int] = []
    answer: list[int] = []
    tail: list[int] = []
    if image_tokens.prompt_layout == CHAT_LAYOUT:
        frame = chat_frame(tokenizer)
        head = [*frame.before_user, *_text_ids(tokenizer, parts.instruction)]
        if parts.input is not None:
            head += _text_ids(tokenizer, "\n\n")
            given = _field_ids(tokenizer, parts.input, image_field == "input", image_ids)
        middle = list(frame.between)
        if parts.response is not None:
            answer = _field_ids(tokenizer, parts.response, image_field == "response", image_ids)
            tail = [frame.end]
    else:
        head = _text_ids(tokenizer, f"{INTRO_BLURB}\n\n")
        head += [_control_id(tokenizer, INSTRUCTION_KEY)]
        head += _text_ids(tokenizer, f"\n{parts.instruction}\n\n")
        if parts.input is not None:
            head += _text_ids(tokenizer, f"{INPUT_KEY}\n")
            given = _field_ids(tokenizer, parts.input, image_field == "input", image_ids)
        middle = (_text_ids(tokenizer, "\n\n") if parts.input is not None else []) + [
            _control_id(tokenizer, RESPONSE_KEY_NL)
        ]
        if parts.response is not None:
            answer = _field_ids(tokenizer, parts.response, image_field == "response", image_ids)
            tail = _text_ids(tokenizer, "\n\n") + [_control_id(tokenizer, END_KEY)]

    shortened = False
    if max_length is not None:
        excess = len(head) + len(given) + len(middle) + len(answer) + len(tail) - max_length
        if excess > 0:
            if shorten_field is None or shorten_field == image_field:
                return None
            part = given if shorten_field == "input" else answer
            keep = len(part) - excess
            if keep < MIN_REPORT_TOKENS:
                return None
            del part[keep:]
            shortened = True

    prompt = head + given + middle
    scored = answer + tail
    return Example(
        input_ids=prompt + scored,
        labels=[IGNORE_INDEX] * len(prompt) + scored,
        task=task,
        shortened=shortened,
    )


def _official_segment(tokenizer, text: str, image_at: int | None, image_ids: list[int]) -> list[int]:
    """Ids of one stretch of text between control tokens; with ``image_at``, ``text`` holds the
    ``<image>`` placeholder at that character offset and its ``image`` token becomes ``image_ids``."""
    ids = _text_ids(tokenizer, text)
    if image_at is None:
        return ids
    before = _text_ids(tokenizer, text[:image_at])
    placeholder = _text_ids(tokenizer, IMAGE_PLACEHOLDER)
    k = len(before)
    if len(placeholder) != 3 or ids[:k] != before or ids[k : k + 3] != placeholder:
        raise ValueError(
            f"this tokenizer does not split {IMAGE_PLACEHOLDER!r} into '<', 'image', '>' at the image: "
            "it cannot hold the official layout"
        )
    return ids[: k + 1] + image_ids + ids[k + 2 :]


def _official_ids(
    parts: PromptParts, tokenizer, image_ids: list[int], image_field: Field | None
) -> tuple[list[int], list[int]]:
    """(prompt ids up to ``### Response:\\n``, scored ids after it) of ``format_prompt(parts)`` split at
    its control tokens, each stretch tokenized whole."""
    instruction, response = _control_id(tokenizer, INSTRUCTION_KEY), _control_id(tokenizer, RESPONSE_KEY_NL)
    stretch = f"\n{parts.instruction}\n\n"
    image_at = None
    if parts.input is not None:
        if image_field == "input":
            image_at = len(stretch) + len(f"{INPUT_KEY}\n")
        stretch += f"{INPUT_KEY}\n{parts.input}\n\n"
    prompt = _text_ids(tokenizer, f"{INTRO_BLURB}\n\n") + [instruction]
    prompt += _official_segment(tokenizer, stretch, image_at, image_ids) + [response]
    scored: list[int] = []
    if parts.response is not None:
        at = 0 if image_field == "response" else None
        scored = _official_segment(tokenizer, f"{parts.response}\n\n", at, image_ids)
        scored += [_control_id(tokenizer, END_KEY)]
    return prompt, scored


def _encode_official(
    parts: PromptParts,
    tokenizer,
    image_ids: list[int],
    image_field: Field | None,
    max_length: int | None,
    shorten_field: Field | None,
    task: str,
) -> Example | None:
    """``encode_parts`` in the official layout; an over-long report is cut by whole tokens of its own
    and the sample re-tokenized (a cut inside a stretch can change the tokens around it)."""
    prompt, scored = _official_ids(parts, tokenizer, image_ids, image_field)
    shortened = False
    if max_length is not None and len(prompt) + len(scored) > max_length:
        if shorten_field is None or shorten_field == image_field:
            return None
        report = _text_ids(tokenizer, getattr(parts, shorten_field))
        keep = len(report) - (len(prompt) + len(scored) - max_length)
        while len(prompt) + len(scored) > max_length:
            if keep < MIN_REPORT_TOKENS:
                return None
            text = tokenizer.decode(report[:keep], clean_up_tokenization_spaces=False)
            cut = PromptParts(**{**parts.__dict__, shorten_field: text})
            prompt, scored = _official_ids(cut, tokenizer, image_ids, image_field)
            keep -= 1
        shortened = True
    return Example(prompt + scored, [IGNORE_INDEX] * len(prompt) + scored, task, shortened)


def image_response_frame(tokenizer, image_tokens: ImageTokenMap) -> tuple[list[int], list[int]]:
    """(ids before, ids after) the image block in a report -> CXR response, the closing ``### End``
    last: what the layout writes around the codes (llmcxr: nothing, then the blank line and
    ``### End``; official: ``<``, then ``>``, the blank line and ``### End``). Generation forces them."""
    codes = np.zeros(image_tokens.tokens_per_image, dtype=np.int64)
    parts = PromptParts("x", None, IMAGE_PLACEHOLDER)
    example = encode_parts(parts, tokenizer, image_tokens, codes, "response")
    scored = [i for i, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE_INDEX]
    start = int(np.flatnonzero(image_tokens.is_block_id(np.asarray(scored)))[0])
    return scored[:start], scored[start + image_tokens.block_length :]


def decode_example(
    input_ids: list[int], tokenizer, image_tokens: ImageTokenMap
) -> tuple[PromptParts, np.ndarray | None]:
    """Inverse of ``encode_parts`` (without truncation): ids -> (parts with ``<image>``, image codes)."""
    ids = np.asarray(input_ids, dtype=np.int64)
    if image_tokens.prompt_layout == CHAT_LAYOUT:
        return _decode_chat(ids, tokenizer, image_tokens)
    is_image = image_tokens.is_block_id(ids)
    codes = None
    if is_image.any():
        where = np.flatnonzero(is_image)
        start, stop = int(where[0]), int(where[-1]) + 1
        if stop - start != len(where):
            raise ValueError("image tokens are not one contiguous block")
        codes = image_tokens.block_codes(ids[start:stop])
        # official: the block sits between the placeholder's own '<' and '>'
        placeholder = "image" if image_tokens.is_official else IMAGE_PLACEHOLDER
        text = (
            tokenizer.decode(ids[:start].tolist(), clean_up_tokenization_spaces=False)
            + placeholder
            + tokenizer.decode(ids[stop:].tolist(), clean_up_tokenization_spaces=False)
        )
    else:
        text = tokenizer.decode(ids.tolist(), clean_up_tokenization_spaces=False)
    return parse_prompt(text), codes


def _decode_chat(
    ids: np.ndarray, tokenizer, image_tokens: ImageTokenMap
) -> tuple[PromptParts, np.ndarray | None]:
    """``decode_example`` in the chat layout, split at the template's ids (user text that spells the
    template is text, so it cannot be mistaken for it); a blank line parts the instruction from the input."""
    frame = chat_frame(tokenizer)
    before, between = list(frame.before_user), list(frame.between)
    row = ids.tolist()
    cut = next((k for k in range(len(before), len(row)) if row[k : k + len(between)] == between), None)
    if row[: len(before)] != before or cut is None:
        raise ValueError("not a chat-layout example of this tokenizer's template")
    codes = None

    def text(part: list[int]) -> str:
        nonlocal codes
        where = np.flatnonzero(image_tokens.is_block_id(np.asarray(part, dtype=np.int64)))
        if len(where):
            codes = image_tokens.block_codes(np.asarray(part[where[0] : where[-1] + 1]))
            part = part[: where[0]] + [-1] + part[where[-1] + 1 :]
        pieces = [[]]
        for i in part:
            pieces.append([]) if i == -1 else pieces[-1].append(i)
        return IMAGE_PLACEHOLDER.join(tokenizer.decode(p, clean_up_tokenization_spaces=False) for p in pieces)

    question, answer = row[len(before) : cut], row[cut + len(between) :]
    instruction, sep, given = text(question).partition("\n\n")
    response = text(answer[:-1]) if answer and answer[-1] == frame.end else None
    return PromptParts(instruction, given if sep else None, response), codes
