"""The Dolly-v2 instruction format, byte for byte, and its inverse.

The strings are those of databrickslabs/dolly ``training/consts.py`` (the format dolly-v2-3b, the
paper's base model, was tuned on; LLM-CXR, Lee et al. 2023, keeps it). An image appears in a prompt
as the ``<image>`` placeholder, which the example builder swaps for the image's token block (the
LLM-CXR code's ``CXR_VQ_VQ_REPLACE_TEMPLATE``).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmcxr.errors import BadInputError

INTRO_BLURB = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
INSTRUCTION_KEY = "### Instruction:"
INPUT_KEY = "Input:"
RESPONSE_KEY = "### Response:"
END_KEY = "### End"
RESPONSE_KEY_NL = f"{RESPONSE_KEY}\n"
# Dolly adds exactly these three as special tokens (dolly training/trainer.py ``load_tokenizer``).
CONTROL_TOKENS: tuple[str, ...] = (END_KEY, INSTRUCTION_KEY, RESPONSE_KEY_NL)
IMAGE_PLACEHOLDER = "<image>"
# The unconditional input of classifier-free guidance: no report (report -> CXR), no image (CXR -> report).
# Training drops the input to it; generation builds the unconditional twin of each prompt with it.
NULL_REPORT = ""


@dataclass
class PromptParts:
    """One instruction example as text. ``input`` is None for Dolly's no-input format; ``response``
    is None for a generation prompt (the text ends right after ``### Response:\\n``)."""

    instruction: str
    input: str | None = None
    response: str | None = None


def format_prompt(parts: PromptParts) -> str:
    """The Dolly string for ``parts`` (PROMPT_WITH_INPUT_FORMAT / PROMPT_NO_INPUT_FORMAT /
    PROMPT_FOR_GENERATION_FORMAT of dolly ``training/consts.py``)."""
    text = f"{INTRO_BLURB}\n\n{INSTRUCTION_KEY}\n{parts.instruction}\n\n"
    if parts.input is not None:
        text += f"{INPUT_KEY}\n{parts.input}\n\n"
    text += RESPONSE_KEY_NL
    if parts.response is not None:
        text += f"{parts.response}\n\n{END_KEY}"
    return text


def parse_prompt(text: str) -> PromptParts:
    """Split a Dolly string back into its parts: ``parse_prompt(format_prompt(p)) == p``.

    The instruction must not itself contain ``\\n\\nInput:\\n`` (a builder never writes one).
    """
    head = f"{INTRO_BLURB}\n\n{INSTRUCTION_KEY}\n"
    if not text.startswith(head):
        raise BadInputError("prompt", "does not start with the Dolly intro and '### Instruction:'")
    body = text[len(head) :]
    cut = body.find(f"\n\n{RESPONSE_KEY_NL}")
    if cut < 0:
        raise BadInputError("prompt", "has no '### Response:' line")
    question, answer = body[:cut], body[cut + len(f"\n\n{RESPONSE_KEY_NL}") :]
    instruction, sep, given = question.partition(f"\n\n{INPUT_KEY}\n")
    response: str | None = None
    if answer:
        if not answer.endswith(f"\n\n{END_KEY}"):
            raise BadInputError("prompt", "response does not end with '### End'")
        response = answer[: -len(f"\n\n{END_KEY}")]
    return PromptParts(instruction=instruction, input=given if sep else None, response=response)
