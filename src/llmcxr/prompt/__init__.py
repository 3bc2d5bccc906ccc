"""The Dolly instruction format (or the base's own chat template) with image-token blocks: text and ids,
both ways."""

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
from llmcxr.prompt.examples import (
    IGNORE_INDEX,
    Example,
    decode_example,
    encode_parts,
    image_response_frame,
)
from llmcxr.prompt.phrasings import (
    IMAGE_GENERATION,
    OFFICIAL_IMAGE_GENERATION,
    OFFICIAL_REPORT_GENERATION,
    PHRASINGS,
    REPORT_GENERATION,
    phrasings_for,
)

__all__ = [
    "CONTROL_TOKENS",
    "END_KEY",
    "IGNORE_INDEX",
    "IMAGE_GENERATION",
    "IMAGE_PLACEHOLDER",
    "OFFICIAL_IMAGE_GENERATION",
    "OFFICIAL_REPORT_GENERATION",
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
    "image_response_frame",
    "parse_prompt",
    "phrasings_for",
]
