"""Tiny random stand-ins laid out as the protocol metrics' real folders, built offline:

- ``tiny_bert``: a word-piece BERT folder (config, weights, tokenizer), the BERTScore backbone here;
- ``tiny_chexbert``: CheXbert weights (safetensors, the released key layout) and its BERT folder;
- ``tiny_rad_dino``: a ``Dinov2Model`` folder with a RAD-DINO-like ``preprocessor_config.json``;
- ``tiny_judge``: a causal LM folder (BPE tokenizer + scratch GPT-NeoX) for the GREEN code path;
- ``tiny_biovil_t``: a BioViL-T folder (CXR-BERT config/vocab, image and text weights) at tiny widths.

Their numbers mean nothing; they let every code path run in CI.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

WORDS = (
    "no acute cardiopulmonary process mild moderate pulmonary edema and cardiomegaly pleural effusion".split()
)


def tiny_bert(folder: Path, layers: int = 2, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *characters,
        *("##" + c for c in characters),
        *WORDS,
    ]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast.from_pretrained(folder, do_lower_case=True, model_max_length=512).save_pretrained(
        folder
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def tiny_chexbert(folder: Path) -> tuple[Path, Path]:
    """(weights.safetensors, bert folder) as ``convert_chexbert`` leaves them."""
    from safetensors.torch import save_file
    from transformers import BertModel

    bert = tiny_bert(folder / "bert", layers=1, seed=1)
    torch.manual_seed(1)
    model = BertModel.from_pretrained(bert)
    heads = torch.nn.ModuleList([torch.nn.Linear(16, 4 if i < 13 else 2) for i in range(14)])
    state = {f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()}
    state |= {f"linear_heads.{k}": v.contiguous() for k, v in heads.state_dict().items()}
    save_file(state, folder / "chexbert.safetensors")
    return folder / "chexbert.safetensors", bert


def tiny_rad_dino(folder: Path) -> Path:
    """A 2-layer Dinov2 (patch 14) with RAD-DINO's processor settings scaled down (crop 28 px)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        patch_size=14, image_size=28,
    )  # fmt: skip
    Dinov2Model(config).save_pretrained(folder)
    processor = {  # microsoft/rad-dino's preprocessor_config.json, its 518 px shrunk to 28 px
        "image_processor_type": "BitImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 28},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": 28, "width": 28},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5307, 0.5307, 0.5307],
        "image_std": [0.2583, 0.2583, 0.2583],
        "do_convert_rgb": True,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def tiny_judge(folder: Path) -> Path:
    """A random causal LM folder with a BPE tokenizer (no chat template): the GREEN judge's place."""
    from _tiny_lm import tiny_model
    from llmcxr.model import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([" ".join(WORDS), "Matched Findings Clinically Significant Errors"], 300)
    model = tiny_model(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_biovil_t(folder: Path, seed: int = 0, as_pickles: bool = False) -> Path:
    """A BioViL-T folder with BioViL-T's tensor names at tiny widths (stem 4, one block per layer):
    the snapshot's config.json + vocab.txt, the image model's and CXR-BERT's weights, random; with
    ``as_pickles`` the snapshot's .pt / .bin files (for the convert step) instead of safetensors."""
    from safetensors.torch import save_file
    from transformers import BertModel

    from llmcxr.metrics.biovil import IMAGE_WEIGHTS, BioViLTImage, ProjectionHead

    bert = tiny_bert(folder, seed=seed)
    settings = json.loads((bert / "config.json").read_text())
    settings |= {"model_type": "cxr-bert", "projection_size": 8, "architectures": ["CXRBertModel"]}
    (folder / "config.json").write_text(json.dumps(settings))
    torch.manual_seed(seed)
    image = BioViLTImage(stem=4, blocks=(1, 1, 1, 1), temporal=6, joint=8)
    for module in image.modules():  # non-trivial BatchNorm statistics, as a trained model has
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    image_state = image.state_dict() | {"encoder.encoder.fc.weight": torch.randn(3, 128)}
    text_state = {f"bert.{k}": v for k, v in BertModel.from_pretrained(bert).state_dict().items()}
    text_state |= {f"cls_projection_head.{k}": v for k, v in ProjectionHead(16, 8).state_dict().items()}
    text_state["cls.predictions.decoder.weight"] = text_state["bert.embeddings.word_embeddings.weight"]
    (folder / "model.safetensors").unlink()
    if as_pickles:
        torch.save(image_state, folder / f"{IMAGE_WEIGHTS}.pt")
        torch.save(text_state, folder / "pytorch_model.bin")
    else:
        save_file(image_state, folder / f"{IMAGE_WEIGHTS}.safetensors")
        text_state.pop("cls.predictions.decoder.weight")  # shared storage: the snapshot's .bin only
        save_file(text_state, folder / "model.safetensors")
    return folder
