"""Packing, stage selection (MIMIC-CXR layout), the task mixture, recipes, resume and the CLI."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from _tiny_lm import (
    LM_VQ,
    REPORTS,
    TINY_SCRATCH,
    TOKENS_PER_IMAGE,
    DictStore,
    StopAfterCheckpoint,
    tiny_llmcxr_folder,
    tiny_model,
    tiny_tokenizer,
    write_world,
)
from llmcxr.datasets.instructions import Instruction, read_instructions
from llmcxr.datasets.manifest import read_manifest
from llmcxr.datasets.mimic import read_mimic
from llmcxr.errors import BadInputError
from llmcxr.model import load_llmcxr_folder
from llmcxr.prompt import IGNORE_INDEX
from llmcxr.records import QA, CXRRecord
from llmcxr.training import (
    DataSource,
    Mixture,
    ModelSpec,
    OptimSpec,
    RowCollator,
    SampleCounts,
    TrainRecipe,
    encode_samples,
    mix_tasks,
    pack_examples,
    select_stage,
    single_rows,
    train_recipe,
)
from llmcxr.training.config import TASKS
from llmcxr.training.model_setup import prepare_model
from llmcxr.training.sources import image_codes_and_reports, read_source
from llmcxr.vq import TokenStore

ROOT = Path(__file__).resolve().parents[1]


def _records(n: int) -> list[CXRRecord]:
    return [
        CXRRecord(
            image_id=f"i{k}",
            findings="The heart is normal in size. " * (1 + k % 3),
            impression="No acute process.",
            view="PA",
            qa=[QA("Is there an effusion?", "no", "presence")] if k % 2 else [],
        )
        for k in range(n)
    ]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def examples(tok):
    tokenizer, image_tokens, _ = tok
    store = DictStore({f"i{k}": np.full(TOKENS_PER_IMAGE, k % 16) for k in range(12)})
    texts = [Instruction("Name a lobe.", "The right upper lobe.")]
    samples = mix_tasks(_records(12), texts, Mixture(0.3, 0.3, 0.2, 0.2), 1, seed=0)
    return encode_samples(samples, tokenizer, image_tokens, store, max_length=256)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_give_the_same_logits_as_single_examples(tok, examples, attention):
    tokenizer, _, _ = tok
    model = tiny_model(len(tokenizer)).eval()
    model.config._attn_implementation = attention
    rows = pack_examples(examples[:6], max_length=512, tasks=TASKS)
    assert len(rows) < 6  # several examples share a row
    batch = RowCollator(tokenizer.pad_token_id, packed=True)(rows)
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache transformers takes position_ids as a
        # continuation, not as packed sequences (masking_utils._preprocess_mask_arguments).
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        for row, row_logits in zip(rows, packed, strict=True):
            starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row.position_ids)]
            for a, b in zip(starts, starts[1:], strict=False):
                alone = model(input_ids=torch.tensor([row.input_ids[a:b]])).logits[0]
                assert torch.allclose(row_logits[a:b], alone, atol=1e-4)


def test_packing_boundaries(tok, examples):
    rows = pack_examples(examples, max_length=400, tasks=TASKS)
    assert sum(len(r.input_ids) for r in rows) == sum(len(e.input_ids) for e in examples)
    assert all(len(r.input_ids) <= 400 for r in rows)
    for row in rows:
        starts = [i for i, p in enumerate(row.position_ids) if p == 0]
        assert starts[0] == 0
        for s in starts:  # each example starts on an unscored prompt token: nothing learns across a seam
            assert row.labels[s] == IGNORE_INDEX
            assert row.task_ids[s] == row.task_ids[min(s + 1, len(row.task_ids) - 1)]
    with pytest.raises(ValueError):
        pack_examples(examples, max_length=10, tasks=TASKS)


def test_collators_pad_and_mask(tok, examples):
    tokenizer, _, _ = tok
    rows = single_rows(examples[:3], TASKS)
    padded = RowCollator(tokenizer.pad_token_id, packed=False)(rows)
    length = padded["input_ids"].shape[1]
    assert length % 8 == 0 and "position_ids" not in padded
    for k, row in enumerate(rows):
        n = len(row.input_ids)
        assert padded["attention_mask"][k, :n].all() and not padded["attention_mask"][k, n:].any()
        assert (padded["labels"][k, n:] == IGNORE_INDEX).all() and (padded["task_ids"][k, n:] == -1).all()
    packed = RowCollator(tokenizer.pad_token_id, packed=True)(rows)
    assert "attention_mask" not in packed and packed["position_ids"].shape == packed["input_ids"].shape


def test_mixture_unconditional_fraction_and_determinism():
    records = _records(400)
    texts = [Instruction(f"q{k}", "a") for k in range(30)]
    samples = mix_tasks(records, texts, Mixture(0.4, 0.4, 0.0, 0.2), 1, seed=3, unconditional_fraction=0.25)
    tasks = [s.task for s in samples]
    assert tasks.count("text") == 100  # 400 image samples : text = 0.8 : 0.2
    assert abs(tasks.count("report_generation") - 200) < 40
    generation = [s for s in samples if s.task == "image_generation"]
    empty = sum(s.parts.input == "" for s in generation)
    assert 0.15 < empty / len(generation) < 0.35
    assert all(s.shorten_field is None for s in generation if s.parts.input == "")
    again = mix_tasks(records, texts, Mixture(0.4, 0.4, 0.0, 0.2), 1, seed=3, unconditional_fraction=0.25)
    assert [s.parts for s in again] == [s.parts for s in samples]
    vqa = mix_tasks(records, [], Mixture(0, 0, 1, 0), 1, seed=0)
    assert len(vqa) == 200 and all(s.task == "vqa" for s in vqa)  # only records that have QA


def test_unconditional_report_fraction_drops_the_image_and_keeps_old_streams(tok):
    records, texts = _records(400), [Instruction(f"q{k}", "a") for k in range(30)]
    mixture = Mixture(0.5, 0.5, 0.0, 0.0)
    plain = mix_tasks(records, texts, mixture, 1, seed=3, unconditional_fraction=0.1)
    zero = mix_tasks(
        records, texts, mixture, 1, seed=3, unconditional_fraction=0.1, unconditional_report_fraction=0.0
    )
    assert [s.parts for s in zero] == [s.parts for s in plain]  # recipes without it draw the same samples
    samples = mix_tasks(records, texts, mixture, 1, seed=3, unconditional_report_fraction=0.3)
    reports = [s for s in samples if s.task == "report_generation"]
    blind = [s for s in reports if s.image_id is None]
    assert 0.2 < len(blind) / len(reports) < 0.4
    by_response = {r.report for r in records}
    assert all(
        s.parts.input == "" and s.image_field is None and s.parts.response in by_response for s in blind
    )
    assert all(s.parts.input == "<image>" and s.image_field == "input" for s in reports if s.image_id)
    tokenizer, image_tokens, _ = tok
    (example,) = encode_samples(blind[:1], tokenizer, image_tokens, DictStore({}), max_length=256)
    assert not image_tokens.is_image_id(np.asarray(example.input_ids)).any()  # no image, no store needed
    assert "Input:\n\n\n### Response:" in tokenizer.decode(example.input_ids)


def test_missing_tokens_and_long_samples_are_counted(tok):
    tokenizer, image_tokens, _ = tok
    samples = mix_tasks(_records(6), [], Mixture(1, 0, 0, 0), 1, seed=0)
    store = DictStore({"i0": np.zeros(TOKENS_PER_IMAGE, int)})
    counts = SampleCounts()
    kept = encode_samples(samples, tokenizer, image_tokens, store, max_length=512, counts=counts)
    assert len(kept) == 1 and counts.dropped_no_tokens["report_generation"] == 5


# ---- MIMIC-CXR-JPG layout and stage selection -----------------------------------------------


def _gz_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(gzip.compress(text.getvalue().encode()))


def write_mimic_fixture(root: Path) -> None:
    """Two patients: p10000001 with two studies (the later has no impression), p11000002 with one
    study of an AP and a LATERAL image; a third study's report file is missing."""
    studies = {
        ("10000001", "50000001"): "FINDINGS: Heart is enlarged.\n\nIMPRESSION: Cardiomegaly.",
        ("10000001", "50000002"): "FINDINGS: Lungs are clear.",
        ("11000002", "50000003"): "FINDINGS: Small effusion.\n\nIMPRESSION: Left effusion.",
    }
    for (subject, study), text in studies.items():
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(text)
    split = [
        ["d1", "50000001", "10000001", "train"],
        ["d2", "50000002", "10000001", "train"],
        ["d3", "50000003", "11000002", "validate"],
        ["d4", "50000003", "11000002", "validate"],
        ["d5", "50000009", "12000003", "train"],
    ]
    _gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split)
    meta = [
        ["d1", "PA", "21800101", "101010.123"],
        ["d2", "PA", "21800505", "090000"],
        ["d3", "AP", "21900101", "80000"],
        ["d4", "LATERAL", "21900101", "80000"],
        ["d5", "PA", "21700101", "000000"],
    ]
    _gz_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "ViewPosition", "StudyDate", "StudyTime"], meta
    )


def test_mimic_layout_and_stage_selection(tmp_path):
    write_mimic_fixture(tmp_path)
    records = read_mimic(tmp_path)
    by_id = {r.image_id: r for r in records}
    assert sorted(by_id) == ["d1", "d2", "d3", "d4"]  # d5 has no report file
    assert by_id["d1"].impression == "Cardiomegaly." and "enlarged" in by_id["d1"].findings
    assert by_id["d3"].view == "AP" and by_id["d3"].split == "validate"
    assert by_id["d1"].image_path.endswith("files/p10/p10000001/s50000001/d1.jpg")
    assert by_id["d3"].study_date == "21900101T080000"
    stage1 = {r.image_id for r in select_stage(records, 1)}
    assert stage1 == {"d1", "d2", "d3"}  # frontal with a report; the lateral is out
    stage2 = {r.image_id for r in select_stage(records, 2)}
    assert stage2 == {"d1", "d3"}  # earliest study per patient, PA/AP, with an impression


def test_manifest_reader(tmp_path):
    manifest, _ = write_world(tmp_path, n=4)
    records = read_manifest(manifest)
    assert [r.image_id for r in records] == ["img0", "img1", "img2", "img3"]
    assert records[0].qa[0].question == "Is there cardiomegaly?" and records[0].split == "validate"
    report_only = tmp_path / "r.csv"
    report_only.write_text("image,report\na.png,FINDINGS: Clear lungs. IMPRESSION: Normal.\n")
    (record,) = read_manifest(report_only)
    assert record.impression == "Normal." and "Clear lungs" in record.findings


def test_builtin_instructions():
    items = read_instructions()
    assert len(items) >= 50 and all(i.instruction and i.response for i in items)


def test_image_codes_and_reports_hold_out_only_the_first_sources_first_items(tmp_path: Path) -> None:
    # Both worlds name their images img0, img1, ...: each source must be read from its own store.
    sources = [
        DataSource("manifest", *write_world(tmp_path / "first", n=24, seed=0)),
        DataSource("manifest", *write_world(tmp_path / "second", n=16, seed=5)),
    ]
    got = image_codes_and_reports(sources, ("train", "validate"), held_out_items=2)
    records = [read_source(source) for source in sources]
    stores = [TokenStore(source.token_store) for source in sources]
    train = [(number, r) for number in (0, 1) for r in records[number] if r.split == "train"]
    validate = [(0, r) for r in records[0] if r.split == "validate"][:2]  # of 3 in the first world
    for split, expected in (("train", train), ("validate", validate)):
        codes, reports = got[split]
        assert codes.shape == (len(expected), 8, 8) and codes.dtype == np.int64
        assert reports == [r.report for _, r in expected]
        for row, (number, record) in zip(codes, expected, strict=True):
            assert np.array_equal(row.reshape(-1), stores[number].get(record.image_id))
    with pytest.raises(BadInputError, match="no test images"):
        image_codes_and_reports(sources, ("test",))


# ---- end to end: the CLI, resume ------------------------------------------------------------


def _tiny_recipe(tmp_path: Path, max_steps: int) -> TrainRecipe:
    manifest, store = write_world(tmp_path / "world", n=16)
    return TrainRecipe(
        output_dir=tmp_path / "run",
        data=[DataSource("manifest", manifest, store)],
        model=ModelSpec(scratch=TINY_SCRATCH),
        mixture=Mixture(0.3, 0.3, 0.2, 0.2),
        max_length=384,
        bf16=False,  # exact comparisons below
        optim=OptimSpec(learning_rate=1e-3, warmup_steps=0, max_steps=max_steps, per_device_batch_size=2),
        logging_steps=1,
        eval_steps=1000,
        save_steps=2,
        eval_samples_per_task=4,
    )


def test_cli_trains_two_steps_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from llmcxr.cli import app
    from llmcxr.config import save_config
    from llmcxr.model import load_llmcxr_folder

    recipe = _tiny_recipe(tmp_path, max_steps=2)
    save_config(recipe, tmp_path / "recipe.yaml")
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "recipe.yaml")])
    assert result.exit_code == 0, result.output
    folder = load_llmcxr_folder(tmp_path / "run" / "model")
    assert folder.image_tokens.tokens_per_image == 64 and folder.image_tokens.codebook_size == 512
    assert not (tmp_path / "run" / "model" / "training_args.bin").exists()  # no pickles shipped
    import json

    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    losses = [e for e in log["log_history"] if "loss" in e]
    assert len(losses) == 2 and any(k.startswith("loss_") for k in losses[0])
    assert any(k.startswith("eval_") and k.endswith("_loss") for e in log["log_history"] for k in e)


def test_a_checkpoint_exports_as_the_model_of_that_step(tmp_path):
    import json

    from typer.testing import CliRunner

    from llmcxr.cli import app
    from llmcxr.generation import LLMCXR

    recipe = _tiny_recipe(tmp_path / "a", max_steps=2)
    train_recipe(recipe)  # save_steps 2: checkpoint-2 holds the final weights
    run = Path(recipe.output_dir)
    out = tmp_path / "step2"
    result = CliRunner().invoke(app, ["export-checkpoint", str(run / "checkpoint-2"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = LLMCXR.from_pretrained(out, device="cpu")
    final = LLMCXR.from_pretrained(run / "model", device="cpu")
    for (name, a), (_, b) in zip(
        sorted(exported.model.state_dict().items()), sorted(final.model.state_dict().items()), strict=True
    ):
        assert torch.equal(a, b), name
    assert exported.image_tokens == final.image_tokens
    config = json.loads((out / "llmcxr_train.json").read_text())
    assert config["stopped_at_step"] == 2 and config["weights_from"].endswith("checkpoint-2")
    assert not [p for p in out.iterdir() if p.suffix in (".pt", ".pth", ".bin")]  # no pickles shipped
    for bad, reason in ((run, "no .safetensors"), (tmp_path / "nowhere", "no .safetensors")):
        result = CliRunner().invoke(app, ["export-checkpoint", str(bad), "--out", str(tmp_path / "x")])
        assert result.exit_code != 0 and reason in str(result.exception), result.output


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    train_recipe(_tiny_recipe(tmp_path / "a", max_steps=4))
    interrupted = _tiny_recipe(tmp_path / "b", max_steps=4)
    train_recipe(interrupted, callbacks=[StopAfterCheckpoint(2)])
    assert (tmp_path / "b" / "run" / "checkpoint-2").is_dir()
    assert not (tmp_path / "b" / "run" / "checkpoint-4").exists()
    train_recipe(interrupted, resume=True)
    hash_a = (tmp_path / "a" / "run" / "weights_sha256.rank0.txt").read_text()
    hash_b = (tmp_path / "b" / "run" / "weights_sha256.rank0.txt").read_text()
    assert hash_a == hash_b


class DieWhileSaving(TrainerCallback):
    """Arms a failure inside the Trainer's checkpoint write at step ``step`` (the optimizer's file, after
    the weights and config are written), as a kill mid-write would leave it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            kwargs["optimizer"].state_dict = lambda: (_ for _ in ()).throw(KeyboardInterrupt("killed"))
        return control


def test_a_kill_while_a_checkpoint_is_written_leaves_none_and_resume_takes_the_previous(tmp_path):
    train_recipe(_tiny_recipe(tmp_path / "a", max_steps=4))
    interrupted = _tiny_recipe(tmp_path / "b", max_steps=4)
    with pytest.raises(KeyboardInterrupt):
        train_recipe(interrupted, callbacks=[DieWhileSaving(4)])
    run = tmp_path / "b" / "run"
    assert (run / "checkpoint-2").is_dir() and not (run / "checkpoint-4").exists()  # before: half-written
    # A checkpoint left half-written by a run without staging (a 0-byte config.json) is skipped on resume.
    (run / "checkpoint-3").mkdir()
    (run / "checkpoint-3" / "config.json").write_bytes(b"")
    with pytest.warns(
        UserWarning, match="checkpoint-3: incomplete checkpoint .config.json is missing or empty"
    ):
        train_recipe(interrupted, resume=True)
    hash_a = (tmp_path / "a" / "run" / "weights_sha256.rank0.txt").read_text()
    assert (run / "weights_sha256.rank0.txt").read_text() == hash_a
    assert not (run / ".staging").exists()


def test_a_run_with_a_grid_stem_resumes_exactly_and_exports_its_stem(tmp_path):
    """The stem's weights are saved beside the LM's in every checkpoint: a killed run resumes to
    the same weights, and a checkpoint exports as the model of its step, stem included."""
    from llmcxr.model.grid_stem import GRID_STEM_WEIGHTS, GridStemConfig, grid_stem_of
    from llmcxr.training.export import export_checkpoint

    def stem_recipe(root: Path) -> TrainRecipe:
        recipe = _tiny_recipe(root, max_steps=4)
        stem = GridStemConfig(summary_layers=1)
        return dataclasses.replace(recipe, model=ModelSpec(scratch=TINY_SCRATCH, grid_stem=stem))

    train_recipe(stem_recipe(tmp_path / "a"))
    interrupted = stem_recipe(tmp_path / "b")
    train_recipe(interrupted, callbacks=[StopAfterCheckpoint(2)])
    assert (tmp_path / "b" / "run" / "checkpoint-2" / GRID_STEM_WEIGHTS).is_file()
    train_recipe(interrupted, resume=True)
    hash_a = (tmp_path / "a" / "run" / "weights_sha256.rank0.txt").read_text()
    assert hash_a == (tmp_path / "b" / "run" / "weights_sha256.rank0.txt").read_text()
    final = load_llmcxr_folder(tmp_path / "a" / "run" / "model")
    stem = grid_stem_of(final.model)
    for out in (stem.out, stem.summary.out):
        assert float(out.weight.detach().abs().sum()) > 0  # it trained
    exported = load_llmcxr_folder(export_checkpoint(tmp_path / "a" / "run" / "checkpoint-4", tmp_path / "x"))
    assert torch.equal(grid_stem_of(exported.model).out.weight, stem.out.weight)
    assert torch.equal(grid_stem_of(exported.model).summary.out.weight, stem.summary.out.weight)


def test_lora_run_with_checkpointing_and_a_grid_stem_exports_a_merged_plain_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from llmcxr.model.grid_stem import GridStemConfig, grid_stem_of
    from llmcxr.training import LoraSpec

    recipe = dataclasses.replace(
        _tiny_recipe(tmp_path, max_steps=2),
        model=ModelSpec(scratch=TINY_SCRATCH, grid_stem=GridStemConfig(width=8)),
        lora=LoraSpec(enabled=True, r=4, alpha=8),
        gradient_checkpointing=True,
    )
    folder = train_recipe(recipe)
    merged = AutoModelForCausalLM.from_pretrained(folder)  # no adapter files: LoRA merged into the weights
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert not (folder / "adapter_config.json").exists()
    stem = grid_stem_of(load_llmcxr_folder(folder).model)  # trained in full beside the adapters, then saved
    assert stem is not None and float(stem.out.weight.detach().abs().sum()) > 0


def _continue_exported(tmp_path: Path, **recipe_fields):
    """(the exported folder, loaded; what ``prepare_model`` makes of a recipe continuing it)."""
    folder = tiny_llmcxr_folder(tmp_path / "first", REPORTS)
    recipe = TrainRecipe(
        output_dir=tmp_path / "second",
        data=[DataSource("manifest", tmp_path / "unused.jsonl", tmp_path / "tokens")],
        model=ModelSpec(base=folder),
        **recipe_fields,
    )
    return load_llmcxr_folder(folder), prepare_model(recipe, [], LM_VQ.codebook_size, LM_VQ.num_tokens)


def test_a_recipe_can_continue_an_exported_model(tmp_path: Path):
    """``model.base`` = a folder this project exported: same vocabulary, same image ids, same weights."""
    exported, (model, tokenizer, image_tokens) = _continue_exported(tmp_path)
    assert len(tokenizer) == len(exported.tokenizer) and image_tokens == exported.image_tokens
    before, after = exported.model.get_input_embeddings().weight, model.get_input_embeddings().weight
    assert after.shape == before.shape and torch.equal(after, before)  # no new rows, nothing re-initialised


def test_row_markers_can_be_added_when_continuing_an_exported_model(tmp_path: Path):
    """``image_row_markers`` on a base without them: g new tokens after the image tokens, their rows
    initialised, every earlier row untouched."""
    exported, (model, tokenizer, image_tokens) = _continue_exported(tmp_path, image_row_markers=True)
    g = image_tokens.grid_size
    assert len(tokenizer) == len(exported.tokenizer) + g
    assert image_tokens == dataclasses.replace(
        exported.image_tokens, row_marker_first_id=len(exported.tokenizer)
    )
    before, after = exported.model.get_input_embeddings().weight, model.get_input_embeddings().weight
    old = len(exported.tokenizer)
    assert torch.equal(after[:old], before[:old])
    markers = after[old : old + g]
    assert torch.isfinite(markers).all() and not torch.equal(markers[0], markers[1])


# ---- long runs: fast packing, mixture draws, the wall-time schedule ---------------------------


def _plain_first_fit(sizes: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing by scanning every bin: the reference the fast packer must equal."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        for b, free in enumerate(room):
            if sizes[i] <= free:
                bins[b].append(i)
                room[b] -= sizes[i]
                break
        else:
            bins.append([i])
            room.append(capacity - sizes[i])
    return sorted(bins, key=min)


@pytest.mark.parametrize("seed", range(6))
def test_fast_packing_fills_the_same_rows_as_a_plain_first_fit_scan(seed):
    from llmcxr.prompt import Example

    rng = np.random.default_rng(seed)
    capacity = int(rng.choice([16, 64, 512]))
    sizes = [int(s) for s in rng.integers(1, capacity + 1, size=int(rng.integers(0, 300)))]
    examples = [Example([k] * size, [k] * size, task="text") for k, size in enumerate(sizes)]
    rows = pack_examples(examples, capacity, TASKS)
    expected = [[k for i in members for k in [i] * sizes[i]] for members in _plain_first_fit(sizes, capacity)]
    assert [row.input_ids for row in rows] == expected
    assert all(len(row.input_ids) <= capacity for row in rows)


def test_memo_tokenizer_hands_out_copies_and_the_same_ids(tok):
    from llmcxr.training.tasks import MemoTokenizer

    tokenizer = tok[0]
    memo = MemoTokenizer(tokenizer)
    kwargs = {"add_special_tokens": False, "split_special_tokens": True}
    first = memo("The heart is normal. <img_3> ### End", **kwargs)["input_ids"]
    assert first == tokenizer("The heart is normal. <img_3> ### End", **kwargs)["input_ids"]
    first.clear()  # a caller cutting its list must not cut the remembered one
    assert (
        memo("The heart is normal. <img_3> ### End", **kwargs)["input_ids"]
        == tokenizer("The heart is normal. <img_3> ### End", **kwargs)["input_ids"]
    )
    assert memo.pad_token_id == tokenizer.pad_token_id


def test_mixture_draws_give_records_other_tasks_in_each_draw(tok, tmp_path):
    from llmcxr.training.data import build_datasets

    tokenizer, image_tokens, _ = tok
    records = _records(40)
    store = DictStore({r.image_id: np.full(TOKENS_PER_IMAGE, 3) for r in records})
    texts = [Instruction("Name a lobe.", "The right upper lobe.")] * 10
    kept = []
    for draws in (1, 3):
        recipe = TrainRecipe(
            output_dir=tmp_path,
            data=[DataSource("manifest", tmp_path, tmp_path)],
            model=ModelSpec(scratch=TINY_SCRATCH),
            mixture=Mixture(0.4, 0.4, 0.1, 0.1),
            max_length=256,
            mixture_draws=draws,
        )
        _, _, counts = build_datasets(recipe, records, texts, tokenizer, image_tokens, store)
        kept.append(counts.kept)
    # Every record once per draw (one held out for eval of each 20), text in proportion.
    assert sum(kept[1].values()) == 3 * sum(kept[0].values())
    draws = [
        [s.task for s in mix_tasks(records, [], Mixture(0.4, 0.4, 0.1, 0.0), 1, seed=42 + 1000 * d)]
        for d in range(3)
    ]
    assert draws[0] != draws[1] != draws[2]  # the same record gets other tasks in other draws
    with pytest.raises(BadInputError, match="mixture_draws"):
        dataclasses.replace(recipe, mixture_draws=0)


def test_a_missing_vq_folder_stops_training_before_it_starts(tmp_path: Path) -> None:
    # The export copies the VQ-GAN at the end: found missing there, a whole run would end unexported.
    recipe = dataclasses.replace(_tiny_recipe(tmp_path, max_steps=2), vq_folder=tmp_path / "no-vq")
    with pytest.raises(BadInputError, match="VQ-GAN folder not found"):
        train_recipe(recipe, print_logs=False)
    assert not Path(recipe.output_dir).exists()


class _Clock:
    """A TimeBudget whose elapsed seconds the test sets."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.now = seconds, 0.0

    def elapsed(self) -> float:
        return self.now


def test_wall_time_schedule_warms_up_by_steps_and_decays_over_the_time_budget():
    from llmcxr.training.loop import wall_time_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    clock = _Clock(seconds=100.0)
    schedule = wall_time_schedule(optimizer, "cosine", warmup_steps=3, budget=clock)
    lrs = [optimizer.param_groups[0]["lr"]]
    for now in (0.0, 0.0, 20.0, 50.0, 100.0, 150.0):
        clock.now = now
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[:3] == pytest.approx([0.25, 0.5, 0.75])  # warm-up by steps
    assert lrs[3] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))  # then the time decides
    assert lrs[4] == pytest.approx(0.5)  # half the budget spent
    assert lrs[5:] == pytest.approx([0.0, 0.0])  # over the budget: stays at the schedule's end
    with pytest.raises(BadInputError, match="no wall-time form"):
        wall_time_schedule(optimizer, "polynomial", 0, clock)
    with pytest.raises(BadInputError, match="max_train_minutes"):
        TrainRecipe(
            output_dir=Path("x"),
            model=ModelSpec(scratch=TINY_SCRATCH),
            optim=OptimSpec(schedule_clock="wall_time"),
        )


def test_a_resumed_run_spends_only_the_time_left_of_its_budget(tmp_path):
    import json

    from llmcxr.training.export import export_checkpoint
    from llmcxr.training.loop import TIME_BUDGET_FILE, TimeBudget

    recipe = _tiny_recipe(tmp_path, max_steps=4)
    recipe = dataclasses.replace(
        recipe, max_train_minutes=60.0, optim=dataclasses.replace(recipe.optim, schedule_clock="wall_time")
    )
    train_recipe(recipe, callbacks=[StopAfterCheckpoint(2)])
    saved = tmp_path / "run" / "checkpoint-2" / TIME_BUDGET_FILE
    spent = json.loads(saved.read_text())["training_seconds"]
    assert 0 < spent < 60 * 60 and TimeBudget.spent_in(saved.parent) == spent
    exported = export_checkpoint(saved.parent, tmp_path / "step2")
    assert not (exported / TIME_BUDGET_FILE).exists()  # training state, not part of a model folder
    train_recipe(recipe, resume=True)
    final = json.loads((tmp_path / "run" / "checkpoint-4" / TIME_BUDGET_FILE).read_text())
    assert final["training_seconds"] > spent  # counted on from where it stopped, not from 0


def test_per_task_losses_are_summed_as_by_indexing_the_scored_tokens():
    from llmcxr.training.loop import CXRTrainer

    torch.manual_seed(0)
    logits, labels = torch.randn(3, 20, 11), torch.randint(0, 11, (3, 20))
    task_ids = torch.randint(-1, len(TASKS), (3, 20))
    labels[(torch.rand(3, 20) < 0.4) | (task_ids < 0)] = IGNORE_INDEX
    counter = CXRTrainer.__new__(CXRTrainer)  # only the counters, no Trainer set-up
    counter._task_loss = counter._task_tokens = counter._real_tokens = None
    counter._count(logits, labels, task_ids)
    target, task = labels[:, 1:], task_ids[:, 1:]
    scored = target != IGNORE_INDEX
    losses = torch.nn.functional.cross_entropy(logits[:, :-1][scored], target[scored], reduction="none")
    expected = torch.zeros(len(TASKS), dtype=torch.float64).index_add_(0, task[scored], losses.double())
    assert torch.allclose(counter._task_loss.cpu(), expected)
    assert counter._task_tokens.tolist() == torch.bincount(task[scored], minlength=len(TASKS)).tolist()
    assert int(counter._real_tokens) == int((task_ids >= 0).sum())


def test_a_bf16_lora_run_holds_its_base_in_bf16_saves_only_new_rows_and_exports_bf16(tmp_path):
    """Memory at the paper's shape: the frozen base in bf16, what trains in fp32; the adapter
    checkpoint holds the new tokens' rows, not the embedding matrices; the export is bf16 unless
    fp32 is asked for."""
    from safetensors import safe_open

    from llmcxr.training import LoraSpec

    recipe = dataclasses.replace(
        _tiny_recipe(tmp_path / "a", max_steps=2), bf16=True, lora=LoraSpec(enabled=True, r=4, alpha=8)
    )
    seen: dict[str, tuple[torch.dtype, bool]] = {}

    class Peek(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen.update({n: (p.dtype, p.requires_grad) for n, p in model.named_parameters()})

    folder = train_recipe(recipe, callbacks=[Peek()], print_logs=False)
    assert {dtype for dtype, trains in seen.values() if not trains} == {torch.bfloat16}
    assert {dtype for dtype, trains in seen.values() if trains} == {torch.float32}
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"BF16"}
    vocab = len(load_llmcxr_folder(folder).tokenizer)
    with safe_open(tmp_path / "a" / "run" / "checkpoint-2" / "adapter_model.safetensors", "pt") as adapter:
        rows = [adapter.get_slice(k).get_shape() for k in adapter.keys() if "lora_" not in k]
    assert len(rows) == 2 and all(shape[0] < vocab for shape in rows)  # input and output rows only
    fp32 = dataclasses.replace(recipe, output_dir=tmp_path / "b" / "run", export_fp32=True)
    with safe_open(train_recipe(fp32, print_logs=False) / "model.safetensors", "pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"F32"}
