"""Generation: constrained decoding (always-valid image blocks, text without image tokens),
classifier-free guidance for report -> CXR, response likelihoods (best-of-k images), and the
``LLMCXR`` API."""

from llmcxr.generation.api import LLMCXR, ImageResult, TextResult, Timings
from llmcxr.generation.constraints import ImageTokenConstraint, SpecialIds, TextOnlyConstraint
from llmcxr.generation.decode import DecodeOutput, SamplingConfig, decode, left_pad
from llmcxr.generation.devices import default_cpu_threads, default_dtype
from llmcxr.generation.guidance import Guidance, guide, unconditional_parts
from llmcxr.generation.likelihood import response_log_likelihood

__all__ = [
    "LLMCXR",
    "DecodeOutput",
    "Guidance",
    "ImageResult",
    "ImageTokenConstraint",
    "SamplingConfig",
    "SpecialIds",
    "TextOnlyConstraint",
    "TextResult",
    "Timings",
    "decode",
    "default_cpu_threads",
    "default_dtype",
    "guide",
    "left_pad",
    "response_log_likelihood",
    "unconditional_parts",
]
