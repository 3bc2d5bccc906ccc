"""Token store and the encode/decode/eval jobs, with a tiny random-weight VQ-GAN."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _tiny_vq import MICRO_VQ
from llmcxr.cli import main as cli_main
from llmcxr.cli.vq import app as vq_app
from llmcxr.errors import BadInputError
from llmcxr.imaging import load_cxr, to_pil
from llmcxr.metrics.reconstruction import bicubic_baseline, reconstruction_scores
from llmcxr.vq import VQGAN, TokenStore, TokenStoreWriter, VQConfig, save_vqgan
from llmcxr.vq.encode import decode_tokens, encode_images, evaluate_reconstruction
from llmcxr.vq.token_store import INDEX_NAME, shard_files


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread here: on this shared 2-core machine a tiny conv net with 2 threads ran 40x
    slower (0.83 s vs 0.019 s per batch, measured) while other jobs held the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config() -> VQConfig:
    """32 px, f4 -> 8x8 = 64 tokens, 32 codes: a forward pass takes milliseconds."""
    return dataclasses.replace(MICRO_VQ, resolution=32, attn_resolutions=(8,))


@pytest.fixture
def vq_folder(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    folder = tmp_path / "vq"
    save_vqgan(VQGAN(tiny_config()).eval(), folder)
    return folder


def _write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Random-texture 'radiographs' of mixed sizes and modes (8-bit, 16-bit), >= 64 px per side."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        height, width = 64 + 8 * (i % 3), 64 + 4 * (i % 4)
        if i % 2:
            pixels = rng.integers(0, 65535, (height, width), dtype=np.uint16)
        else:
            pixels = rng.integers(0, 255, (height, width), dtype=np.uint8)
        path = folder / f"cxr{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def images(tmp_path: Path) -> Path:
    _write_images(tmp_path / "images", 7)
    return tmp_path / "images"


def _model(vq_folder: Path) -> VQGAN:
    from llmcxr.vq import load_vqgan

    return load_vqgan(vq_folder)


def _store_tokens(folder: Path) -> dict[str, np.ndarray]:
    store = TokenStore(folder)
    return {i: store.get(i) for i in store.ids()}


# --- the store itself ----------------------------------------------------------------------------


def test_writer_reader_round_trip(tmp_path: Path) -> None:
    cfg = tiny_config()
    rng = np.random.default_rng(1)
    tokens = {f"img{i}": rng.integers(0, cfg.codebook_size, cfg.num_tokens) for i in range(7)}
    with TokenStoreWriter(tmp_path / "store", cfg, shard_size=3) as writer:
        for image_id, row in tokens.items():
            writer.add(image_id, row)
    assert len(shard_files(tmp_path / "store")) == 3  # 3 + 3 + 1
    store = TokenStore(tmp_path / "store")
    assert len(store) == 7 and store.ids() == list(tokens) and "img3" in store and "nope" not in store
    assert store.config == cfg
    for image_id, row in tokens.items():
        got = store.get(image_id)
        assert got.dtype == np.int64 and got.shape == (cfg.num_tokens,)
        np.testing.assert_array_equal(got, row)
    np.testing.assert_array_equal(store.grid("img0"), tokens["img0"].reshape(8, 8))
    np.testing.assert_array_equal(
        store.get_many(["img6", "img1"]), np.stack([tokens["img6"], tokens["img1"]])
    )
    with pytest.raises(KeyError, match="nope"):
        store.get("nope")


def test_writer_validates_tokens_and_tokenizer(tmp_path: Path) -> None:
    cfg = tiny_config()
    writer = TokenStoreWriter(tmp_path / "store", cfg)
    with pytest.raises(ValueError, match="expected 64"):
        writer.add("a", np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="outside"):
        writer.add("a", np.full(64, cfg.codebook_size))
    other = tiny_config()
    other.codebook_size = 64
    with pytest.raises(BadInputError, match="different tokenizer"):
        TokenStoreWriter(tmp_path / "store", other)
    with pytest.raises(BadInputError, match="not a token store"):
        TokenStore(tmp_path / "elsewhere")


def test_reader_rebuilds_a_stale_index(tmp_path: Path) -> None:
    cfg = tiny_config()
    with TokenStoreWriter(tmp_path / "store", cfg, rank=0) as writer:
        writer.add("a", np.zeros(64, np.int64))
    # A second writer (another rank) adds a shard but dies before merging the index.
    late = TokenStoreWriter(tmp_path / "store", cfg, rank=1)
    late.add("b", np.ones(64, np.int64))
    late.flush()
    assert json.loads((tmp_path / "store" / INDEX_NAME).read_text())["num_images"] == 1
    store = TokenStore(tmp_path / "store")
    assert sorted(store.ids()) == ["a", "b"] and store.get("b").sum() == 64
    (tmp_path / "store" / INDEX_NAME).unlink()
    assert sorted(TokenStore(tmp_path / "store").ids()) == ["a", "b"]


# --- encode ---------------------------------------------------------------------------------------


def test_encode_round_trip_and_determinism(vq_folder: Path, images: Path, tmp_path: Path) -> None:
    summary = encode_images(vq_folder, images, tmp_path / "a", batch_size=3, progress=False)
    assert (summary.encoded, summary.failed, summary.store_size) == (7, 0, 7)
    tokens = _store_tokens(tmp_path / "a")
    model = _model(vq_folder)
    for path in sorted(images.glob("*.png")):  # the store holds exactly what the model makes of each image
        expected = model.encode(load_cxr(path, 32)[None])[0].reshape(-1).numpy()
        np.testing.assert_array_equal(tokens[path.stem], expected)
    # Same images, other batch size and a worker process: the same tokens.
    encode_images(vq_folder, images, tmp_path / "b", batch_size=7, num_workers=1, progress=False)
    again = _store_tokens(tmp_path / "b")
    assert again.keys() == tokens.keys()
    for image_id in tokens:
        np.testing.assert_array_equal(again[image_id], tokens[image_id])
    assert TokenStore(tmp_path / "a").config == tiny_config()


class _DiesAfter:
    """A VQ-GAN stand-in that raises on its n-th encode call, as a killed job would stop."""

    def __init__(self, model: VQGAN, calls: int) -> None:
        self.model, self.cfg, self.left = model, model.cfg, calls

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return self.model.encode(images)


def test_encode_resumes_after_interruption(vq_folder: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    dying = _DiesAfter(_model(vq_folder), calls=2)
    with pytest.raises(KeyboardInterrupt):
        encode_images(vq_folder, images, out, batch_size=2, shard_size=100, progress=False, model=dying)  # type: ignore[arg-type]
    assert len(TokenStore(out)) == 4  # the two finished batches were kept
    summary = encode_images(vq_folder, images, out, batch_size=2, progress=False)
    assert (summary.already_done, summary.encoded, summary.store_size) == (4, 3, 7)
    reference = tmp_path / "reference"
    encode_images(vq_folder, images, reference, progress=False)
    resumed, straight = _store_tokens(out), _store_tokens(reference)
    assert resumed.keys() == straight.keys()
    assert all(np.array_equal(resumed[i], straight[i]) for i in straight)
    # A third run has nothing left to do.
    assert encode_images(vq_folder, images, out, progress=False).encoded == 0


def test_encode_failure_list(vq_folder: Path, images: Path, tmp_path: Path) -> None:
    (images / "broken.png").write_bytes((images / "cxr00.png").read_bytes()[:100])
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(images / "thumb.png")
    lines = ["image,view"] + [f"{p.name},PA" for p in sorted(images.glob("*.png"))] + ["lateral.png,LL"]
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(images / "lateral.png")
    (images / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "store"
    summary = encode_images(vq_folder, images / "manifest.csv", out, frontal_only=True, progress=False)
    assert (summary.encoded, summary.failed) == (7, 3)
    failures = {f["image_id"]: f for f in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert set(failures) == {"broken", "thumb", "lateral"}
    assert "truncated" in failures["broken"]["problem"] and "broken.png" in failures["broken"]["problem"]
    assert "smaller than the minimum" in failures["thumb"]["problem"]
    assert "'LL' is not frontal" in failures["lateral"]["problem"]
    # Fix one file: the re-run retries only the failures, and the list shrinks to what still fails.
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(images / "broken.png")
    summary = encode_images(vq_folder, images / "manifest.csv", out, frontal_only=True, progress=False)
    assert (summary.already_done, summary.encoded, summary.failed) == (7, 1, 2)
    assert len((out / "failures.jsonl").read_text().splitlines()) == 2


def test_sharded_ranks_merge_into_one_index(
    vq_folder: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sharded"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):  # as two torchrun processes would, in either order
        monkeypatch.setenv("RANK", rank)
        summary = encode_images(vq_folder, images, out, batch_size=2, shard_size=2, progress=False)
        assert summary.world_size == 2 and summary.assigned == (4 if rank == "0" else 3)
    names = [p.name for p in shard_files(out)]
    assert any(n.startswith("tokens-r00000-") for n in names) and any(
        n.startswith("tokens-r00001-") for n in names
    )
    assert (out / "failures.rank0.jsonl").is_file() and (out / "failures.rank1.jsonl").is_file()
    index = json.loads((out / INDEX_NAME).read_text())
    assert index["num_images"] == 7
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    encode_images(vq_folder, images, tmp_path / "single", progress=False)
    sharded, single = _store_tokens(out), _store_tokens(tmp_path / "single")
    assert sorted(sharded) == sorted(single)
    assert all(np.array_equal(sharded[i], single[i]) for i in single)


# --- decode and evaluate --------------------------------------------------------------------------


def test_decode_writes_pngs(vq_folder: Path, images: Path, tmp_path: Path) -> None:
    encode_images(vq_folder, images, tmp_path / "store", progress=False)
    written = decode_tokens(
        vq_folder, tmp_path / "store", tmp_path / "png", ["cxr01", "cxr04"], progress=False
    )
    assert written == [tmp_path / "png" / "cxr01.png", tmp_path / "png" / "cxr04.png"]
    model, store = _model(vq_folder), TokenStore(tmp_path / "store")
    expected = to_pil(model.decode(torch.from_numpy(store.grid("cxr04"))[None])[0])
    with Image.open(written[1]) as png:
        assert png.mode == "L" and png.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(png), np.asarray(expected))
    with pytest.raises(BadInputError, match="not in the store"):
        decode_tokens(vq_folder, store, tmp_path / "png", ["missing"], progress=False)


def test_evaluate_reconstruction(vq_folder: Path, images: Path) -> None:
    scores = evaluate_reconstruction(vq_folder, images, batch_size=4, progress=False)
    assert scores["n_images"] == 7 and scores["n_failed"] == 0 and scores["num_tokens"] == 64
    assert 0 < scores["psnr"] < 60 and -1 <= scores["ssim"] <= 1
    assert 0 < scores["usage"] <= 1 and 1 <= scores["perplexity"] <= 32
    assert scores["used_codes"] == round(scores["usage"] * 32)
    assert 0 < scores["baseline_bicubic"]["psnr"] < 60


def test_reconstruction_metrics_known_values() -> None:
    original = torch.rand(3, 1, 32, 32) * 1.6 - 0.8  # in [-0.8, 0.8]: a +0.1 shift is not clamped
    same = reconstruction_scores(original, original.clone())
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6) and same["n_images"] == 3
    # +0.1 on [-1, 1] is +0.05 on [0, 1]: MSE 0.0025, PSNR = 10 log10(1 / 0.0025) = 26.02 dB.
    shifted = reconstruction_scores(original, original + 0.1)
    assert shifted["psnr"] == pytest.approx(26.0206, abs=1e-3)
    unit = reconstruction_scores((original + 1) / 2, (original + 1.1) / 2, value_range=(0.0, 1.0))
    assert unit["psnr"] == pytest.approx(26.0206, abs=1e-3)
    smooth = torch.linspace(-1, 1, 32).repeat(1, 1, 32, 1)  # a ramp survives 8x8 bicubic almost intact
    assert reconstruction_scores(smooth, bicubic_baseline(smooth, 8))["psnr"] > 35


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_encode_decode_eval(vq_folder: Path, images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    store, pngs, scores = tmp_path / "store", tmp_path / "png", tmp_path / "scores.json"
    result = runner.invoke(
        vq_app, ["encode", str(vq_folder), str(images), str(store), "--num-workers", "0", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "encoded 7" in result.output and len(TokenStore(store)) == 7
    result = runner.invoke(
        vq_app, ["decode", str(vq_folder), str(store), str(pngs), "--limit", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert len(list(pngs.glob("*.png"))) == 2
    result = runner.invoke(
        vq_app, ["eval", str(vq_folder), str(images), "--json", str(scores), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(scores.read_text())["n_images"] == 7 and "psnr" in result.output


def test_cli_bad_input_is_one_line(
    vq_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["llmcxr", "vq", "encode", str(vq_folder), str(tmp_path / "nowhere"), str(tmp_path / "s")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli_main()
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps at the terminal width
    assert "nowhere" in err and "not found" in err and "Traceback" not in err
