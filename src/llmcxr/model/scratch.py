"""From-scratch language model: a byte-level BPE tokenizer trained on the corpus and a small GPT-NeoX.

For tests, CPU experiments and the demo, where no pretrained LM folder exists (and nothing may be
downloaded). GPT-NeoX is dolly-v2's architecture (pythia); only the size differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from llmcxr.model.vocab import VOCAB_MULTIPLE

EOS_TOKEN = "<|endoftext|>"  # the GPT-NeoX-20B tokenizer's end/padding token, kept for familiarity
PAD_TOKEN = "<|padding|>"


@dataclass
class ScratchConfig:
    """A small GPT-NeoX and its tokenizer, built with random weights."""

    bpe_vocab_size: int = 2048  # BPE merges budget (before control and image tokens are added)
    hidden_size: int = 128  # d_model
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512  # MLP width (4 x hidden as in GPT-NeoX)
    max_position_embeddings: int = 1024  # longest sequence (prompt + 256 image tokens + report)
    rotary_pct: float = 0.25  # fraction of head dims with rotary embeddings (pythia: 0.25)
    seed: int = 0  # weight initialisation seed


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (GPT-2 / GPT-NeoX style: any byte string is encodable) on ``texts``."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, bos_token=EOS_TOKEN
    )


def build_scratch_model(cfg: ScratchConfig, vocab_size: int) -> GPTNeoXForCausalLM:
    """A GPT-NeoX with random weights and ``vocab_size`` rows (rounded up to a multiple of 64)."""
    rows = -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    config = GPTNeoXConfig(
        vocab_size=rows,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        rotary_pct=cfg.rotary_pct,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    torch.manual_seed(cfg.seed)
    return GPTNeoXForCausalLM(config)
