"""The model's context: prompts that do not fit are refused, replies that would run past it are cut short.

A causal LM with learned positions (GPT-NeoX's rotary embeddings are computed up to
``max_position_embeddings``; the shipped model has 512) reads nothing sensible past its last position,
and a 1 MB report made a 270,042-token prompt that ran for minutes at 2 GB before this check (issue 24).
Every entry point (Python API, CLI, REST, web app, evaluation) builds its prompts through ``LLMCXR``,
so the check lives here once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from llmcxr.errors import BadInputError

MIN_REPLY_TOKENS = 16  # a text reply with less room than this is not worth generating: refuse instead


class ReplyShortenedWarning(UserWarning):
    """``max_new_tokens`` was lowered so that prompt and reply fit in the model's positions."""


def max_positions(model: Any) -> int | None:
    """Positions the LM was built for (``config.max_position_embeddings``); None if it states none."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _too_long(what: str, longest: int, reply: str, limit: int) -> BadInputError:
    return BadInputError(
        what,
        f"the prompt is {longest:,} tokens; with {reply} that is over the model's {limit:,} positions",
        f"shorten the text (the whole prompt and reply must fit in {limit:,} tokens)",
    )


def fit_text_reply(
    what: str, prompts: Sequence[Sequence[int]], max_new_tokens: int, limit: int | None
) -> int:
    """The reply budget that fits: ``max_new_tokens``, or the positions the longest prompt leaves.

    Raises BadInputError when the longest prompt leaves fewer than MIN_REPLY_TOKENS positions."""
    if limit is None or not prompts:
        return max_new_tokens
    longest = max(len(p) for p in prompts)
    room = limit - longest
    if room < min(MIN_REPLY_TOKENS, max_new_tokens):
        raise _too_long(what, longest, f"room for a reply of at least {MIN_REPLY_TOKENS} tokens", limit)
    return min(room, max_new_tokens)


def warn_if_cut(
    new_tokens: Sequence[int], stopped: Sequence[bool], budget: int, asked: int, limit: int | None
) -> None:
    """A ``ReplyShortenedWarning`` when a reply ran into a budget the context lowered below ``asked``
    (a reply that ended by itself first lost nothing, so nothing is said)."""
    if budget >= asked or limit is None:
        return
    cut = sum(1 for n, done in zip(new_tokens, stopped, strict=True) if not done and n >= budget)
    if cut:
        warnings.warn(
            ReplyShortenedWarning(
                f"{cut} repl{'y was' if cut == 1 else 'ies were'} cut at {budget:,} new tokens "
                f"(not {asked:,}) so that prompt and reply fit in the model's {limit:,} positions"
            ),
            stacklevel=4,
        )


def check_fits(what: str, lengths: Sequence[int], reply_tokens: int, limit: int | None, reply: str) -> None:
    """Raise BadInputError when a prompt of ``lengths`` plus ``reply_tokens`` exceeds ``limit``."""
    if limit is None or not lengths:
        return
    longest = max(lengths)
    if longest + reply_tokens > limit:
        raise _too_long(what, longest, reply, limit)
