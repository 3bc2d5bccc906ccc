"""BioViL-T image-text alignment (CheXGenBench ``metrics/img_text_alignment_scores.py``) in plain torch.

CheXGenBench scores each generated CXR against its prompt with hi-ml-multimodal's
``ImageTextInferenceEngine.get_similarity_score_from_raw_data`` on BioViL-T
(microsoft/BiomedVLP-BioViL-T): the cosine of the L2-normalised global image embedding and the
L2-normalised projected [CLS] embedding of the prompt, averaged over images. hi-ml-multimodal needs
torchvision and its text model needs ``trust_remote_code``; this module rebuilds what that score reads:

- image (``biovil_t_image_model_proj_size_128``): the file is read as 8-bit grey (min-max remapped,
  as hi-ml's ``load_image``), shorter side resized to 512 (bilinear), centre-cropped to 448, scaled to
  [0, 1] with no mean/std normalisation, copied to 3 channels; a ResNet-50 trunk (layer4, 14 x 14),
  ``backbone_to_vit`` (1x1 conv to 256) joined with the learned ``missing_previous_emb`` -- the
  single-image path of BioViL-T's ``MultiImageEncoder``: its ViT pooler only runs on an image pair --
  then the ``projector`` MLP of 1x1 convs to the 128-d joint space, averaged over the grid;
- text (CXR-BERT): trailing ``!?.`` stripped, BERT's [CLS] of the last layer through
  ``cls_projection_head`` (dense, GELU, LayerNorm, dense).

Weights come from a local folder: ``config.json`` + ``vocab.txt`` (the snapshot's), ``model.safetensors``
(text) and ``biovil_t_image_model_proj_size_128.safetensors`` (image); ``convert_biovil_t`` makes the
safetensors files from the snapshot's ``pytorch_model.bin`` / ``.pt`` (read with ``weights_only=True``).
The widths are read from the weights, so a tiny stand-in with the same names loads the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmcxr.errors import BadInputError

IMAGE_WEIGHTS = "biovil_t_image_model_proj_size_128"
TEXT_WEIGHTS = "model"
RESIZE, CROP = 512, 448  # hi-ml's TRANSFORM_RESIZE and BioViL-T's centre crop
# Parts of the checkpoints the single-image global embedding never reads.
UNUSED_PREFIXES = (
    "encoder.encoder.fc.",
    "encoder.vit_pooler.",
    "classifier.",
    "cls.predictions.",
    "bert.pooler.",
)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3x3 conv), with its parameter names."""

    def __init__(self, inputs: int, width: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inputs, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetTrunk(nn.Module):
    """ResNet-50 up to layer4 (hi-ml's ``ResNetHIML``): (B, 3, H, W) -> (B, 32 * stem, H / 32, W / 32)."""

    def __init__(self, stem: int = 64, blocks: Sequence[int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        inputs = stem
        for index, count in enumerate(blocks):
            width = stem * 2**index
            layer = [Bottleneck(inputs, width, 1 if index == 0 else 2, True)]
            layer += [Bottleneck(width * 4, width, 1, False) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
            inputs = width * 4
        self.num_features = inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class BioViLTImage(nn.Module):
    """BioViL-T's image model on one image: (B, 3, 448, 448) -> (B, joint) L2-normalised global embedding.
    Parameter names follow hi-ml's ``ImageModel`` (``encoder.encoder.*``, ``projector.model.*``)."""

    def __init__(self, stem: int, blocks: Sequence[int], temporal: int, joint: int) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.encoder = ResNetTrunk(stem, blocks)
        self.encoder.backbone_to_vit = nn.Conv2d(self.encoder.encoder.num_features, temporal, 1, bias=False)
        self.encoder.missing_previous_emb = nn.Parameter(torch.zeros(1, temporal, 1, 1))
        self.projector = nn.Module()
        self.projector.model = nn.Sequential(
            nn.Conv2d(2 * temporal, joint, 1, bias=False),
            nn.BatchNorm2d(joint),
            nn.ReLU(),
            nn.Conv2d(joint, joint, 1),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.encoder.backbone_to_vit(self.encoder.encoder(pixels))
        # no previous image: the difference half is the learned "missing" embedding at every patch
        missing = self.encoder.missing_previous_emb.expand(len(patches), -1, *patches.shape[2:])
        projected = self.projector.model(torch.cat([patches, missing], dim=1))
        return F.normalize(projected.mean(dim=(2, 3)), dim=-1)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> BioViLTImage:
        """The model whose widths the weights have (ResNet-50's for BioViL-T, smaller for a stand-in)."""
        blocks = [
            len({k.split(".")[3] for k in state if k.startswith(f"encoder.encoder.layer{i}.")})
            for i in range(1, 5)
        ]
        return cls(
            stem=state["encoder.encoder.conv1.weight"].shape[0],
            blocks=blocks,
            temporal=state["encoder.backbone_to_vit.weight"].shape[0],
            joint=state["projector.model.3.weight"].shape[0],
        )


class ProjectionHead(nn.Module):
    """CXR-BERT's ``cls_projection_head``: dense, GELU, LayerNorm, dense."""

    def __init__(self, hidden: int, projection: int) -> None:
        super().__init__()
        self.dense_to_hidden = nn.Linear(hidden, projection)
        self.LayerNorm = nn.LayerNorm(projection, eps=1e-12)
        self.dense_to_output = nn.Linear(projection, projection)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.dense_to_output(self.LayerNorm(F.gelu(self.dense_to_hidden(cls))))


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``module``; any missing, extra or misshapen tensor is a clear error."""
    state = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    expected = module.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        raise BadInputError(
            path,
            f"not BioViL-T weights: missing {missing[:3]}, unexpected {extra[:3]}, misshapen {wrong[:3]}",
            "give the microsoft/BiomedVLP-BioViL-T snapshot converted by convert_biovil_t",
        )
    module.load_state_dict(state)


def _weights_file(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.safetensors"
    if not path.is_file():
        raise BadInputError(
            folder,
            f"no {path.name}: not a converted BioViL-T folder",
            "run `llmcxr data convert-biovil-t` on the microsoft/BiomedVLP-BioViL-T snapshot",
        )
    return path


class BioViLT(nn.Module):
    """BioViL-T's image and text encoders, from a local folder (see the module's docstring)."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        from safetensors.torch import load_file
        from transformers import BertConfig, BertModel, BertTokenizer

        from llmcxr.metrics.report_models import weights_sha256

        folder = Path(folder)
        for name in ("config.json", "vocab.txt"):
            if not (folder / name).is_file():
                raise BadInputError(folder, f"no {name}: not a BioViL-T folder", "give its snapshot folder")
        image_path, text_path = _weights_file(folder, IMAGE_WEIGHTS), _weights_file(folder, TEXT_WEIGHTS)
        image_state = load_file(image_path)
        try:
            self.image = BioViLTImage.from_state_dict(image_state)
        except (KeyError, IndexError) as error:
            raise BadInputError(image_path, f"not BioViL-T image weights (no {error})") from error
        _load_strict(self.image, image_state, image_path)
        settings = json.loads((folder / "config.json").read_text())
        config = BertConfig(**{k: v for k, v in settings.items() if k not in ("model_type", "auto_map")})
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls_projection_head = ProjectionHead(config.hidden_size, settings.get("projection_size", 128))
        text = nn.Module()
        text.bert, text.cls_projection_head = self.bert, self.cls_projection_head
        _load_strict(text, load_file(text_path), text_path)
        self.tokenizer = BertTokenizer.from_pretrained(folder, local_files_only=True)
        self.max_tokens = config.max_position_embeddings
        self.weights_sha256 = {"image": weights_sha256(image_path), "text": weights_sha256(text_path)}
        self.eval()

    @torch.inference_mode()
    def image_embeddings(self, paths: Sequence[str | Path], batch_size: int = 8) -> torch.Tensor:
        """(N, joint) L2-normalised global embeddings of image files."""
        rows = [
            self.image(torch.stack([biovil_pixels(p) for p in paths[start : start + batch_size]]))
            for start in range(0, len(paths), batch_size)
        ]
        return (
            torch.cat(rows) if rows else torch.zeros(0, self.cls_projection_head.dense_to_output.out_features)
        )

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, joint) L2-normalised projected [CLS] embeddings, one text at a time (no padding, as
        CheXGenBench scores one prompt per call)."""
        specials = [t for t in self.tokenizer.all_special_tokens if t != self.tokenizer.mask_token]
        rows = []
        for index, text in enumerate(texts):
            if any(token in text for token in specials):
                raise BadInputError("prompts", f"prompt {index} holds a special token {specials}")
            ids = self.tokenizer(text.rstrip("!?."), return_tensors="pt")
            if ids["input_ids"].shape[1] > self.max_tokens:
                raise BadInputError("prompts", f"prompt {index} is longer than {self.max_tokens} tokens")
            hidden = self.bert(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
            rows.append(F.normalize(self.cls_projection_head(hidden.last_hidden_state[:, 0]), dim=-1))
        return (
            torch.cat(rows) if rows else torch.zeros(0, self.cls_projection_head.dense_to_output.out_features)
        )


def biovil_pixels(path: str | Path) -> torch.Tensor:
    """(3, 448, 448) float in [0, 1] of one image file, as hi-ml's ``load_image`` + BioViL-T transform."""
    from PIL import Image

    from llmcxr.imaging import load_image

    path = Path(path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB") if image.mode not in ("L", "I", "I;16", "F") else image)
    else:  # DICOM, numpy: the project's loader
        array = load_image(path)
    array = array.astype(np.float64) - array.min()  # remap_to_uint8: min-max to [0, 255], truncated
    array = (array / (array.max() or 1.0) * 255).astype(np.uint8)
    grey = Image.fromarray(array).convert("L")
    width, height = grey.size
    short, long = min(width, height), max(width, height)
    long = int(RESIZE * long / short)  # torchvision Resize(int) on the shorter side
    grey = grey.resize((RESIZE, long) if width <= height else (long, RESIZE), Image.BILINEAR)
    width, height = grey.size
    left, top = int(round((width - CROP) / 2.0)), int(round((height - CROP) / 2.0))
    crop = np.asarray(grey.crop((left, top, left + CROP, top + CROP)), np.float32) / 255.0
    return torch.from_numpy(crop)[None].expand(3, -1, -1)


def alignment_scores(model: BioViLT, images: Sequence[str | Path], prompts: Sequence[str]) -> dict:
    """CheXGenBench's image-text alignment: per image, the cosine of its embedding and its prompt's."""
    if len(images) != len(prompts):
        raise BadInputError("prompts", f"{len(images)} images but {len(prompts)} prompts")
    if not images:
        raise BadInputError("images", "no generated images with a prompt to align")
    cosines = (model.image_embeddings(list(images)) * model.text_embeddings(list(prompts))).sum(-1).double()
    per_image = cosines.numpy()
    return {
        "value": float(per_image.mean()),
        # the board rounds each score and the mean to 3 decimals
        "value_as_board": round(float(np.mean(np.round(per_image, 3))), 3),
        "n": len(per_image),
        "per_image": per_image,
        "weights_sha256": model.weights_sha256,
    }


def convert_biovil_t(folder: str | Path) -> list[Path]:
    """Write the safetensors files ``BioViLT`` reads beside the snapshot's pickles, unpickled with
    ``weights_only=True`` (tensors only); returns the files written."""
    from safetensors.torch import save_file

    from llmcxr.atomic import atomic_path

    folder, written = Path(folder), []
    for source, stem in ((f"{IMAGE_WEIGHTS}.pt", IMAGE_WEIGHTS), ("pytorch_model.bin", TEXT_WEIGHTS)):
        target = folder / f"{stem}.safetensors"
        if target.is_file():
            continue
        if not (folder / source).is_file():
            raise BadInputError(folder, f"neither {target.name} nor {source}", "give the BioViL-T snapshot")
        state = torch.load(folder / source, map_location="cpu", weights_only=True)
        # drop the unused heads: the MLM decoder shares storage with the word embeddings
        state = {k: v.contiguous().clone() for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
        with atomic_path(target) as temporary:
            save_file(state, str(temporary))
        written.append(target)
    return written
