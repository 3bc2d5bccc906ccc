"""The chat layout: an instruction example in the base model's own chat template (issue 22).

An instruct base (SmolLM2-Instruct, Qwen, Llama-Instruct) was tuned on its chat template, not on the
Dolly text; tuned further in that template it has less to unlearn. ``ImageTokenMap.prompt_layout ==
"chat"`` asks every task as one user turn and trains the assistant turn:

    <template before the user's text> instruction [\\n\\n input] <template between the turns> response <end>

The template's own text is rendered once with sentinels (``chat_frame``) and tokenized as the template
(its special tokens stay special); everything a user or a report writes is tokenized with
``split_special_tokens=True``, so it can never become ``<|im_end|>``, a control or an image token. The
response's end is the first special token the template writes after the assistant's text (SmolLM2's
``<|im_end|>``): it is scored, so the model learns to stop, and generation stops on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from llmcxr.errors import BadInputError

_USER, _ASSISTANT = "\x00llmcxr-user\x00", "\x00llmcxr-assistant\x00"


@dataclass(frozen=True)
class ChatFrame:
    """The template's ids around the user's text and after the assistant's."""

    before_user: tuple[int, ...]  # system turn (where the template has a default) + the user turn's opening
    between: tuple[int, ...]  # the user turn's close + the assistant turn's opening
    end: int  # the token that ends the assistant's turn (the stop token)
    opens_turn: tuple[int, ...]  # special ids of the frame other than ``end``: a reply never writes them


def _template_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


@lru_cache(maxsize=8)
def chat_frame(tokenizer) -> ChatFrame:
    """Render the template around sentinels and split it; cached per tokenizer object."""
    if not has_chat_template(tokenizer):
        raise BadInputError(
            "tokenizer",
            "has no chat template: the chat prompt layout needs the base's own template",
            "use prompt_layout llmcxr (the Dolly text) for this base",
        )
    user = [{"role": "user", "content": _USER}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": _ASSISTANT}], tokenize=False
    )
    before, _, between = prompt.partition(_USER)
    if not between or not whole.startswith(before) or _ASSISTANT not in whole:
        raise BadInputError("tokenizer", "its chat template does not place one user and one assistant turn")
    after = whole.partition(_ASSISTANT)[2]
    special = set(tokenizer.all_special_ids)
    after_ids = [i for i in _template_ids(tokenizer, after) if i in special]
    if not after_ids:
        raise BadInputError("tokenizer", "its chat template ends the assistant's turn with no special token")
    end = after_ids[0]
    framed = _template_ids(tokenizer, before) + _template_ids(tokenizer, between)
    opens = tuple(sorted({i for i in framed if i in special and i != end}))
    return ChatFrame(
        tuple(_template_ids(tokenizer, before)), tuple(_template_ids(tokenizer, between)), end, opens
    )
