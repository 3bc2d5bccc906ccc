"""Issue 24's probes of the library and the CLI, as tests: batches that finish their good items, unique
token-store ids, damaged model folders, prompts past the model's positions, .npy and folder inputs,
stated lateral views, the shipped model as the default and its synthetic-only note."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _dicom import write_dicom
from _tiny_lm import REPORTS, tiny_llmcxr_folder
from _tiny_vq import MICRO_VQ
from llmcxr.cli import app
from llmcxr.errors import BadInputError
from llmcxr.generation import LLMCXR, SamplingConfig
from llmcxr.generation.context import ReplyShortenedWarning
from llmcxr.imaging import NonFrontalViewWarning, load_image, scan_images
from llmcxr.model.folder import SHIPPED_MODEL
from llmcxr.vq import VQGAN, save_vqgan
from llmcxr.vq.encode import encode_images

runner = CliRunner()
HAS_SHIPPED = (SHIPPED_MODEL / "config.json").is_file()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return tiny_llmcxr_folder(tmp_path_factory.mktemp("hardening"), REPORTS * 5, max_positions=256)


@pytest.fixture(scope="module")
def llm(model_folder) -> LLMCXR:
    return LLMCXR.from_pretrained(model_folder, device="cpu", dtype=torch.float32)


def _png(path: Path, seed: int = 0, suffix_format: str | None = None) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (80, 72), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=suffix_format)
    return path


# --- batches finish their good items ------------------------------------------------------------


def test_report_batch_finishes_the_good_files_and_reports_each_failure(model_folder, tmp_path):
    good_png, good_jpg = _png(tmp_path / "good.png", 1), _png(tmp_path / "good.jpg", 2)
    whole = good_png.read_bytes()
    (tmp_path / "trunc.png").write_bytes(whole[: len(whole) // 2])
    args = ["report", str(good_png), str(tmp_path / "trunc.png"), str(good_jpg), str(tmp_path)]
    result = runner.invoke(app, [*args, "--model", str(model_folder), "--greedy", "--json"])
    assert result.exit_code == 2  # before: exit 2 with the bad file's error only, no report at all
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["source"] for r in rows] == args[1:]
    assert [("text" in r, "error" in r) for r in rows] == [
        (True, False),
        (False, True),
        (True, False),
        (False, True),
    ]
    assert "unreadable or truncated image" in rows[1]["error"] and "is a folder" in rows[3]["error"]
    # Each good file gets the report (and seed: input i samples with seed + i) it gets alone.
    alone = runner.invoke(app, ["report", str(good_jpg), "--model", str(model_folder), "--greedy", "--json"])
    assert json.loads(alone.stdout.splitlines()[-1])["text"] == rows[2]["text"]


def test_a_folder_with_one_stem_in_two_formats_gets_unique_ids(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _png(folder / "good.png", 1), _png(folder / "good.jpg", 2)
    assert sorted(e.image_id for e in scan_images(folder)) == ["good.jpg", "good.png"]  # before: good, good
    torch.manual_seed(0)
    save_vqgan(VQGAN(MICRO_VQ).eval(), tmp_path / "vq")
    summary = encode_images(tmp_path / "vq", folder, tmp_path / "store", progress=False)
    assert (summary.encoded, summary.store_size) == (2, 2)


def test_encoding_into_a_file_is_refused(tmp_path):
    torch.manual_seed(0)
    save_vqgan(VQGAN(MICRO_VQ).eval(), tmp_path / "vq")
    (tmp_path / "images").mkdir()
    _png(tmp_path / "images" / "a.png")
    (tmp_path / "out").write_text("a file")
    with pytest.raises(BadInputError, match="exists and is a file"):  # before: FileExistsError traceback
        encode_images(tmp_path / "vq", tmp_path / "images", tmp_path / "out", progress=False)


# --- model folders ------------------------------------------------------------------------------


def _damaged(model_folder: Path, root: Path, name: str) -> Path:
    folder = root / name
    shutil.copytree(model_folder, folder)
    weights = folder / "model.safetensors"
    if name == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif name == "bad-header":
        weights.write_bytes(b"\xff" * 16 + weights.read_bytes()[16:])
    elif name == "bad-config":
        (folder / "config.json").write_text("{not json")
    elif name == "wrong-hidden-size":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | {"hidden_size": config["hidden_size"] * 2}))
    elif name == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
    elif name == "pickle-only":
        from safetensors.torch import load_file

        torch.save(load_file(weights), folder / "pytorch_model.bin")
        weights.unlink()
    return folder


@pytest.mark.parametrize(
    "name, problem",
    [
        ("truncated", "unreadable language model"),
        ("bad-header", "unreadable language model"),
        ("bad-config", "config.json"),
        ("wrong-hidden-size", "the weights' shapes do not match config.json"),
        ("no-tokenizer", "unreadable tokenizer"),
        ("pickle-only", "llmcxr loads safetensors only"),  # before: the pickle loaded
    ],
)
def test_a_damaged_model_folder_is_one_clear_error(model_folder, tmp_path, name, problem):
    folder = _damaged(model_folder, tmp_path, name)
    with pytest.raises(BadInputError, match=problem) as err:  # before: raw tracebacks
        LLMCXR.from_pretrained(folder, device="cpu")
    assert str(folder) in str(err.value)
    result = runner.invoke(app, ["chat", "hi", "--model", str(folder)])
    assert isinstance(result.exception, BadInputError)  # `main` prints it as one line, exit 2


# --- the model's context ------------------------------------------------------------------------


def test_a_report_past_the_models_positions_is_refused_at_once(llm):
    huge = "Moderate cardiomegaly. " * 40_000  # ~1 MB; before: a 270,042-token prompt ran for minutes
    start = time.perf_counter()
    with pytest.raises(BadInputError, match="over the model's 256 positions"):
        llm.generate_image(huge, sampling=SamplingConfig(do_sample=False))
    with pytest.raises(BadInputError, match="over the model's 256 positions"):
        llm.chat("Summarise.", huge, SamplingConfig(do_sample=False))
    assert time.perf_counter() - start < 20


def test_a_reply_that_would_run_past_the_positions_is_cut_and_said(llm):
    from llmcxr.generation.context import warn_if_cut
    from llmcxr.prompt import PromptParts

    words = " ".join(REPORTS).split()
    long_input = " ".join(words[: len(words) * 3 // 4])
    room = 256 - len(llm.prompt_ids(PromptParts("Summarise.", long_input)))
    assert 16 < room < 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = llm.chat("Summarise.", long_input, SamplingConfig(do_sample=False, max_new_tokens=200))
    cut = [str(w.message) for w in caught if issubclass(w.category, ReplyShortenedWarning)]
    # said exactly when the reply ran into the lowered budget (one that ended first lost nothing)
    assert cut == (
        []
        if result.stopped
        else [
            f"1 reply was cut at {room} new tokens (not 200) so that "
            "prompt and reply fit in the model's 256 positions"
        ]
    )
    with pytest.warns(ReplyShortenedWarning, match="1 reply was cut at 40 new tokens .not 200"):
        warn_if_cut([40, 12], [False, True], 40, 200, 256)


def test_cli_refuses_an_overlong_or_empty_report(model_folder, tmp_path):
    out = str(tmp_path / "x.png")
    long = runner.invoke(app, ["image", "Effusion. " * 5_000, "--model", str(model_folder), "-o", out])
    assert isinstance(long.exception, BadInputError) and "positions" in str(long.exception)
    empty = runner.invoke(app, ["image", "  ", "--model", str(model_folder), "-o", out])
    assert isinstance(empty.exception, BadInputError) and "REPORT: is empty" in str(empty.exception)
    assert not Path(out).exists()  # before: an empty report was drawn anyway


# --- inputs -------------------------------------------------------------------------------------


def test_npy_files_are_read_with_their_shape_checked_first(model_folder, tmp_path):
    pixels = np.random.default_rng(0).random((80, 72)).astype(np.float32)
    np.save(tmp_path / "cxr.npy", pixels)
    np.testing.assert_array_equal(load_image(tmp_path / "cxr.npy"), pixels)
    np.save(tmp_path / "flat.npy", np.zeros(100))
    with pytest.raises(BadInputError, match="not an image"):
        load_image(tmp_path / "flat.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(BadInputError, match="unreadable .npy"):  # no pickles
        load_image(tmp_path / "objects.npy")
    result = runner.invoke(
        app, ["report", str(tmp_path / "cxr.npy"), "--model", str(model_folder), "--greedy"]
    )
    assert result.exit_code == 0, result.output  # before: advertised in --help, refused


def test_a_stated_lateral_view_warns_where_it_is_read(model_folder, tmp_path):
    ramp = np.round(np.linspace(0, 4095, 72 * 64)).reshape(72, 64)
    lateral = write_dicom(tmp_path / "lat.dcm", ramp, ViewPosition="LL")
    with pytest.warns(NonFrontalViewWarning, match="view 'LL' is not frontal"):
        load_image(lateral)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(write_dicom(tmp_path / "pa.dcm", ramp, ViewPosition="PA"))


# --- the shipped model is the default ------------------------------------------------------------


@pytest.mark.skipif(not HAS_SHIPPED, reason="checkpoints/llmcxr-tiny not in this tree")
def test_the_shipped_model_is_the_default_and_says_it_saw_synthetic_data_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # found beside the package, not in the working directory
    for verb in (["report"], ["image"], ["ask"], ["chat"], ["serve"], ["eval", "run"]):
        help_text = runner.invoke(app, [*verb, "--help"], env={"COLUMNS": "300"}).output
        assert "the shipped model, checkpoints/llmcxr-tiny" in help_text, verb
    result = runner.invoke(
        app, ["chat", "What is a chest X-ray?", "--greedy", "--max-new-tokens", "8", "--json"]
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.splitlines()[-1])
    assert "trained only on synthetic CXRs" in row["model_note"]
    assert result.stderr.count("trained only on synthetic CXRs") == 1
