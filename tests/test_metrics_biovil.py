"""BioViL-T image-text alignment in plain torch, on a tiny random stand-in with BioViL-T's tensor names:
loading (safetensors and the convert step), embeddings, the score against a direct computation, the
preprocessing, and clear errors for folders that are not BioViL-T."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from _tiny_protocol_models import tiny_biovil_t, tiny_rad_dino
from llmcxr.errors import BadInputError
from llmcxr.metrics.biovil import (
    CROP,
    IMAGE_WEIGHTS,
    BioViLT,
    alignment_scores,
    biovil_pixels,
    convert_biovil_t,
)
from llmcxr.metrics.chexgenbench import chexgenbench_scores

PROMPTS = ["mild pulmonary edema.", "no acute cardiopulmonary process", "pleural effusion and cardiomegaly!"]


def _images(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(1)
    paths = []
    for index in range(count):
        path = folder / f"g{index}.png"
        Image.fromarray(rng.integers(0, 256, (40 + 8 * index, 36), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def biovil(tmp_path_factory) -> Path:
    return tiny_biovil_t(tmp_path_factory.mktemp("biovil") / "biovil-t")


def test_load_round_trip_and_embeddings(biovil: Path, tmp_path: Path) -> None:
    model = BioViLT(biovil)
    saved = load_file(biovil / f"{IMAGE_WEIGHTS}.safetensors")
    for name, tensor in model.image.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    text = load_file(biovil / "model.safetensors")
    assert torch.equal(
        model.bert.embeddings.word_embeddings.weight, text["bert.embeddings.word_embeddings.weight"]
    )
    assert torch.equal(
        model.cls_projection_head.dense_to_output.bias, text["cls_projection_head.dense_to_output.bias"]
    )
    images = model.image_embeddings(_images(tmp_path / "g"))
    prompts = model.text_embeddings(PROMPTS)
    assert images.shape == prompts.shape == (3, 8)
    assert torch.allclose(images.norm(dim=-1), torch.ones(3)) and torch.allclose(
        prompts.norm(dim=-1), torch.ones(3)
    )
    assert not torch.allclose(images[0], images[1])  # the embedding reads the image
    assert set(model.weights_sha256) == {"image", "text"}


def test_alignment_equals_direct_cosine(biovil: Path, tmp_path: Path) -> None:
    """The score is the mean cosine of each image's embedding and its own prompt's [CLS] projection,
    the text side recomputed here from the raw tensors (HF BERT + the head's formula)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    model, paths = BioViLT(biovil), _images(tmp_path / "g")
    result = alignment_scores(model, paths, PROMPTS)
    raw = load_file(biovil / "model.safetensors")
    bert = BertModel(BertConfig.from_pretrained(biovil), add_pooling_layer=False).eval()
    bert.load_state_dict({k[5:]: v for k, v in raw.items() if k.startswith("bert.") and ".pooler." not in k})
    tokenizer, head = BertTokenizer.from_pretrained(biovil), "cls_projection_head."
    expected = []
    for path, prompt in zip(paths, PROMPTS, strict=True):
        ids = tokenizer(prompt.rstrip("!?."), return_tensors="pt")
        with torch.no_grad():
            cls = bert(**ids).last_hidden_state[:, 0]
        hidden = F.gelu(
            F.linear(cls, raw[head + "dense_to_hidden.weight"], raw[head + "dense_to_hidden.bias"])
        )
        hidden = F.layer_norm(
            hidden, (8,), raw[head + "LayerNorm.weight"], raw[head + "LayerNorm.bias"], 1e-12
        )
        text = F.linear(hidden, raw[head + "dense_to_output.weight"], raw[head + "dense_to_output.bias"])
        image = model.image_embeddings([path])
        expected.append(F.cosine_similarity(image, text).item())
    assert result["per_image"] == pytest.approx(expected, abs=1e-5)
    assert result["value"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert result["value_as_board"] == round(float(np.mean(np.round(expected, 3))), 3)
    # each image is scored against its own prompt: other prompts give other per-image scores
    shuffled = alignment_scores(model, paths, PROMPTS[1:] + PROMPTS[:1])["per_image"]
    assert not np.allclose(shuffled, result["per_image"], rtol=0, atol=1e-6)  # float32 noise: ~1e-7


def test_convert_step_matches_safetensors(biovil: Path, tmp_path: Path) -> None:
    pickles = tiny_biovil_t(tmp_path / "snapshot", as_pickles=True)
    with pytest.raises(BadInputError, match="convert-biovil-t"):
        BioViLT(pickles)
    written = convert_biovil_t(pickles)
    assert sorted(p.name for p in written) == [f"{IMAGE_WEIGHTS}.safetensors", "model.safetensors"]
    assert convert_biovil_t(pickles) == []  # already converted
    paths = _images(tmp_path / "g")
    converted, direct = BioViLT(pickles), BioViLT(biovil)  # same seed: same tensors
    assert torch.allclose(converted.image_embeddings(paths), direct.image_embeddings(paths))
    assert torch.allclose(converted.text_embeddings(PROMPTS), direct.text_embeddings(PROMPTS))


def test_mismatched_folders_are_clear_errors(biovil: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not a BioViL-T folder"):
        BioViLT(tiny_rad_dino(tmp_path / "rad-dino"))
    broken = tiny_biovil_t(tmp_path / "broken")
    image = load_file(broken / f"{IMAGE_WEIGHTS}.safetensors")
    image.pop("encoder.missing_previous_emb")
    image["encoder.extra.weight"] = torch.zeros(2)
    save_file(image, broken / f"{IMAGE_WEIGHTS}.safetensors")
    with pytest.raises(BadInputError, match=r"missing \['encoder.missing_previous_emb'\].*encoder.extra"):
        BioViLT(broken)
    save_file({"conv.weight": torch.zeros(2)}, broken / f"{IMAGE_WEIGHTS}.safetensors")
    with pytest.raises(BadInputError, match="not BioViL-T image weights"):
        BioViLT(broken)
    model = BioViLT(biovil)
    with pytest.raises(BadInputError, match="special token"):
        model.text_embeddings(["effusion [SEP] none"])
    with pytest.raises(BadInputError, match="3 images but 2 prompts"):
        alignment_scores(model, _images(tmp_path / "g"), PROMPTS[:2])


def test_pixels_resize_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    """A 600-wide, 800-tall horizontal ramp: shorter side to 512 (682 tall), crop 448 from the centre;
    min-max remapped first, so a 100..200 ramp spans [0, 1] as 0..255 does."""
    ramp = np.tile(np.linspace(100, 200, 600), (800, 1)).astype(np.uint8)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    pixels = biovil_pixels(tmp_path / "ramp.png")
    assert pixels.shape == (3, CROP, CROP) and torch.equal(pixels[0], pixels[2])
    row = pixels[0, CROP // 2].numpy()
    assert np.all(np.diff(row) >= 0)  # the ramp survives, left to right
    # the crop drops (512 - 448) / 2 = 32 resized columns each side: 32/512 of the 0..1 ramp
    assert row[0] == pytest.approx(32 / 512, abs=0.01) and row[-1] == pytest.approx(480 / 512, abs=0.01)
    Image.fromarray(np.full((50, 50), 7, np.uint8)).save(tmp_path / "flat.png")
    assert torch.count_nonzero(biovil_pixels(tmp_path / "flat.png")) == 0


def test_chexgenbench_lists_alignment(biovil: Path, tmp_path: Path) -> None:
    paths = _images(tmp_path / "g")
    result = chexgenbench_scores(paths, paths, None, biovil_t=biovil, prompts=PROMPTS)
    entry = result["metrics"]["alignment_biovil_t"]
    assert entry["value"] == pytest.approx(alignment_scores(BioViLT(biovil), paths, PROMPTS)["value"])
    assert entry["n"] == 3 and len(entry["weights_sha256"]["image"]) == 64
    assert (
        "BioViL-T folder"
        in chexgenbench_scores(paths, paths, None)["metrics"]["alignment_biovil_t"]["not_run"]
    )
    no_prompts = chexgenbench_scores(paths, paths, None, biovil_t=biovil)["metrics"]["alignment_biovil_t"]
    assert "no prompts" in no_prompts["not_run"]


def test_cli_converts_then_scores_alignment(tmp_path: Path) -> None:
    """`data convert-biovil-t` on a snapshot of pickles, then `eval images --protocol chexgenbench
    --biovil-t --prompts`: each generated image is paired with its prompt by id."""
    import json

    from typer.testing import CliRunner

    from llmcxr.cli import app

    snapshot = tiny_biovil_t(tmp_path / "snapshot", as_pickles=True)
    converted = CliRunner().invoke(app, ["data", "convert-biovil-t", str(snapshot)])
    assert converted.exit_code == 0, converted.output
    paths = _images(tmp_path / "gen")
    rows = [{"id": p.stem, "report": prompt} for p, prompt in zip(paths, PROMPTS, strict=True)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[::-1]))
    arguments = ["eval", "images", "--generated", str(tmp_path / "gen"), "--reference", str(tmp_path / "gen"),
                 "--protocol", "chexgenbench", "--biovil-t", str(snapshot), "--out", str(tmp_path / "out.json")]  # fmt: skip
    result = CliRunner().invoke(app, [*arguments, "--prompts", str(tmp_path / "prompts.jsonl")])
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "out.json").read_text())["metrics"]["alignment_biovil_t"]
    expected = alignment_scores(BioViLT(snapshot), paths, PROMPTS)["value"]
    assert entry["value"] == pytest.approx(expected) and entry["n"] == 3
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:2]))
    missing = CliRunner().invoke(app, [*arguments, "--prompts", str(tmp_path / "prompts.jsonl")])
    assert missing.exit_code != 0 and "have no prompt" in str(missing.exception or missing.output)
