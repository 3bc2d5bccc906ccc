"""The Dolly instruction format with image-token blocks: text and ids, both ways."""

from llmcxr.prompt.dolly import (
    CONTROL_TOKENS,
    END_KEY,
    IMAGE_PLACEHOLDER,
    INSTRUCTION_KEY,
    INTRO_BLURB,
    NULL_REPORT,
    RESPONSE_KEY_NL,
    PromptParts,
    format_prompt,
    parse_prompt,
)
from llmcxr.prompt.examples import IGNORE_INDEX, Example, decode_example, encode_parts
from llmcxr.prompt.phrasings import IMAGE_GENERATION, PHRASINGS, REPORT_GENERATION

__all__ = [
    "CONTROL_TOKENS",
    "END_KEY",
    "IGNORE_INDEX",
    "IMAGE_GENERATION",
    "IMAGE_PLACEHOLDER",
    "INSTRUCTION_KEY",
    "INTRO_BLURB",
    "NULL_REPORT",
    "PHRASINGS",
    "REPORT_GENERATION",
    "RESPONSE_KEY_NL",
    "Example",
    "PromptParts",
    "decode_example",
    "encode_parts",
    "format_prompt",
    "parse_prompt",
]
