"""Causal language models with image tokens: vocabulary, the self-describing folder, from-scratch models,
growth, the grid stem."""

from llmcxr.model.folder import LLMCXRFolder, load_llmcxr_folder, save_llmcxr_folder, write_llmcxr_files
from llmcxr.model.grid_stem import GridStem, GridStemConfig, attach_grid_stem, grid_stem_of
from llmcxr.model.grow import grow_layers
from llmcxr.model.recommended import RECOMMENDED_FILE, GenerationDefaults
from llmcxr.model.scratch import ScratchConfig, build_scratch_model, train_bpe_tokenizer
from llmcxr.model.vocab import (
    CHAT_LAYOUT,
    IMAGE_TOKENS_FILE,
    OFFICIAL_LAYOUT,
    PROMPT_LAYOUTS,
    ImageTokenMap,
    add_cxr_tokens,
    official_image_tokens,
    resize_for_tokenizer,
)

__all__ = [
    "CHAT_LAYOUT",
    "OFFICIAL_LAYOUT",
    "PROMPT_LAYOUTS",
    "RECOMMENDED_FILE",
    "GenerationDefaults",
    "official_image_tokens",
    "GridStem",
    "GridStemConfig",
    "attach_grid_stem",
    "grid_stem_of",
    "IMAGE_TOKENS_FILE",
    "ImageTokenMap",
    "LLMCXRFolder",
    "ScratchConfig",
    "add_cxr_tokens",
    "build_scratch_model",
    "grow_layers",
    "load_llmcxr_folder",
    "resize_for_tokenizer",
    "save_llmcxr_folder",
    "train_bpe_tokenizer",
    "write_llmcxr_files",
]
