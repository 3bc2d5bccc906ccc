"""A tokenizer in dolly-v2's layout whose every id is known by construction, and a fake release.

Byte-level BPE as GPT-NeoX's (GPT-2 pre-tokenizer regex, bytes as unicode characters): byte b is id
1 + b, ``<|endoftext|>`` is 0, and nine merges make ``\\n\\n``, ``Input`` and ``image`` single tokens,
so a test can write the ids of any text without merges in it by hand (``byte_ids``). Then the four
Dolly special tokens, in dolly's order; image code c is ``len(tokenizer) + c`` as in LLM-CXR.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from _taming import fake_taming_checkpoint

DOLLY_SPECIAL = ["### End", "### Instruction:", "### Response:", "### Response:\n"]
MERGES = [
    ("Ċ", "Ċ"),
    ("I", "n"),
    ("In", "p"),
    ("Inp", "u"),
    ("Inpu", "t"),
    ("i", "m"),
    ("im", "a"),
    ("ima", "g"),
]
MERGES += [("imag", "e")]
NL, NL2 = 1 + 10, 257  # "\n" (byte 10), "\n\n" (the first merge)
INPUT, IMAGE = 261, 265  # "Input", "image" (the last merge of each chain)
LT, GT, COLON = 1 + ord("<"), 1 + ord(">"), 1 + ord(":")
END, INSTRUCTION, RESPONSE, RESPONSE_NL = 266, 267, 268, 269
FIRST_IMAGE_ID = 270  # len(tokenizer): where LLM-CXR puts code 0


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the ByteLevel pre-tokenizer's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_ids(text: str) -> list[int]:
    """Ids of ``text`` that holds none of the merged strings: one per UTF-8 byte."""
    return [1 + b for b in text.encode("utf-8")]


def official_tokenizer() -> PreTrainedTokenizerFast:
    chars = bytes_to_unicode()
    vocab = {"<|endoftext|>": 0} | {chars[b]: 1 + b for b in range(256)}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": DOLLY_SPECIAL})
    assert len(tokenizer) == FIRST_IMAGE_ID
    return tokenizer


def fake_release(root: Path, seed: int = 0) -> tuple[Path, Path, PreTrainedTokenizerFast, GPTNeoXForCausalLM]:
    """An unpacked LLM-CXR release in miniature: ``root/lm`` (config.json, pytorch_model.bin, tokenizer)
    with 270 tokens + 32 image rows, and ``root/vq`` (taming .ckpt + its YAML: 4 x 4 codes of 32)."""
    tokenizer = official_tokenizer()
    config = GPTNeoXConfig(
        vocab_size=FIRST_IMAGE_ID + 32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,  # the official prompt (~240 tokens here) and an image block must fit
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config).eval()
    lm = root / "lm"
    lm.mkdir(parents=True)
    config.save_pretrained(lm)
    tokenizer.save_pretrained(lm)
    torch.save(model.state_dict(), lm / "pytorch_model.bin")  # as zero_to_fp32.py leaves it
    (root / "vq").mkdir()
    ckpt, _, _ = fake_taming_checkpoint(root / "vq")
    return lm, ckpt, tokenizer, model
