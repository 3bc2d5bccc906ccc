"""RadGraph F1 (Jain et al. 2021, reward levels of Delbrouck et al. 2022) where the user has the model.

llmcxr neither ships nor downloads RadGraph. ``radgraph_f1`` runs the ``radgraph`` package
(``pip install "llmcxr[radgraph]"``) on a local, extracted model (``radgraph.tar.gz`` or
``radgraph-xl.tar.gz`` of StanfordAIMI/RRG_scorers: ``config.json``, ``weights.th``, ``vocabulary/``)
and on a local copy of the BERT its config names, so nothing is fetched at run time. The package
loads ``weights.th`` with ``torch.load``, weights-only (explicitly on CPU, by torch >= 2.6's default on
GPU): tensors only, no pickled code.

Per report pair the package annotates both reports (entities with labels, relations between them) and
scores three F1s, which are then averaged over pairs:

- ``simple`` (RG_E): the sets of (entity tokens, label);
- ``partial`` (RG_ER, the "RadGraph F1" most papers quote): the same, each entity also marked by
  whether it has a relation;
- ``complete``: (entity, label, relation, related entity) for entities with relations.

A pair with an empty report, or where either side has no entity, scores 0 at every level.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmcxr.errors import BadInputError

MODEL_TYPES = ("radgraph", "radgraph-xl", "modern-radgraph-xl")  # the package's chest X-ray models
MODEL_FILES = ("config.json", "weights.th", "vocabulary")
LEVELS = ("simple", "partial", "complete")


@dataclass(frozen=True)
class RadGraphModel:
    """Where the RadGraph model is: the extracted release folder, which release it is, and its BERT
    (a local folder; default: the Hugging Face cache entry of the name in its config)."""

    folder: Path
    model_type: str = "radgraph"
    bert_folder: Path | None = None


def radgraph_f1(
    predictions: Sequence[str], references: Sequence[str], model: RadGraphModel
) -> dict[str, object]:
    """RadGraph F1 at the three reward levels, averaged over report pairs, and each pair's scores."""
    if len(predictions) != len(references):
        raise BadInputError(
            "reports", f"{len(predictions)} predictions for {len(references)} references", "pair them by id"
        )
    with staged_radgraph(model) as cache, contextlib.redirect_stdout(io.StringIO()):  # it prints its device
        from radgraph import F1RadGraph

        scorer = F1RadGraph(reward_level="all", model_type=model.model_type, model_cache_dir=cache)
        means, per_pair, _, _ = scorer(refs=list(references), hyps=list(predictions))
    return {
        "model_type": model.model_type,
        "folder": str(model.folder),
        "n": len(predictions),
        "radgraph_f1": float(means[1]),
        **{level: float(value) for level, value in zip(LEVELS, means, strict=True)},
        "per_report": [dict(zip(LEVELS, scores, strict=True)) for scores in zip(*per_pair, strict=True)],
    }


def radgraph_annotations(reports: Sequence[str], model: RadGraphModel) -> list[dict]:
    """Each report's RadGraph annotation, ``{"entities": {id: {"tokens", "label", "relations"}}}``,
    as ``radgraph.RadGraph`` writes it (an empty report: no entities)."""
    with staged_radgraph(model) as cache, contextlib.redirect_stdout(io.StringIO()):
        from radgraph import RadGraph

        annotations = RadGraph(model_type=model.model_type, model_cache_dir=cache)(list(reports))
    return [annotations.get(str(number), {"entities": {}}) for number in range(len(reports))]


@contextlib.contextmanager
def staged_radgraph(model: RadGraphModel):
    """A temporary cache folder laid out as the package reads it (``<cache>/<model_type>/``), its
    config naming the local BERT, while transformers' tokenizers carry the methods the package calls."""
    config = _model_config(model)
    try:
        import radgraph  # noqa: F401
    except ImportError as error:
        raise BadInputError(
            "radgraph", f"the radgraph package is not importable ({error})", 'pip install "llmcxr[radgraph]"'
        ) from error
    bert = _bert_folder(model, config)
    for section in (
        config["dataset_reader"]["token_indexers"],
        config["model"]["embedder"]["token_embedders"],
    ):
        section["bert"]["model_name"] = str(bert)  # a path: transformers loads it without the network
    with tempfile.TemporaryDirectory() as cache:
        staged = Path(cache) / model.model_type
        staged.mkdir()
        for name in ("weights.th", "vocabulary"):
            (staged / name).symlink_to((Path(model.folder) / name).resolve())
        (staged / "config.json").write_text(json.dumps(config), encoding="utf-8")
        with tokenizer_methods_radgraph_calls():
            yield cache


@contextlib.contextmanager
def tokenizer_methods_radgraph_calls():
    """While it runs, give transformers' tokenizers back the two methods radgraph 0.1.18's bundled
    allennlp calls and transformers 5 removed; removed again afterwards (no-op on transformers 4):

    - ``encode_plus``: always ``__call__`` on one text or a pair;
    - ``build_inputs_with_special_tokens`` (one segment; reached when the config sets ``max_length``):
      the tokenizer's own start and end tokens around the ids."""
    from transformers import PreTrainedTokenizerBase

    def encode_plus(self, *args, **kwargs):
        return self(*args, **kwargs)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        if token_ids_1 is not None:
            raise NotImplementedError("radgraph adds special tokens to one segment at a time")
        bare = self("a", add_special_tokens=False)["input_ids"]
        full = self("a", add_special_tokens=True)["input_ids"]
        start = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        return full[:start] + list(token_ids_0) + full[start + len(bare) :]

    added = []
    for name, method in (
        ("encode_plus", encode_plus),
        ("build_inputs_with_special_tokens", build_inputs_with_special_tokens),
    ):
        if not hasattr(PreTrainedTokenizerBase, name):
            setattr(PreTrainedTokenizerBase, name, method)
            added.append(name)
    try:
        yield
    finally:
        for name in added:
            delattr(PreTrainedTokenizerBase, name)


def _model_config(model: RadGraphModel) -> dict:
    folder = Path(model.folder)
    if model.model_type not in MODEL_TYPES:
        raise BadInputError(
            "radgraph model type",
            f"{model.model_type!r} is not a chest X-ray RadGraph model",
            f"use one of {MODEL_TYPES}",
        )
    missing = [name for name in MODEL_FILES if not (folder / name).exists()]
    if missing:
        raise BadInputError(
            folder,
            f"not an extracted RadGraph model: {', '.join(missing)} missing",
            "extract radgraph.tar.gz (StanfordAIMI/RRG_scorers) and give the folder holding config.json, "
            "weights.th and vocabulary/",
        )
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config["dataset_reader"]["token_indexers"]["bert"]["model_name"]
        config["model"]["embedder"]["token_embedders"]["bert"]["model_name"]
    except (ValueError, KeyError, TypeError) as error:
        raise BadInputError(
            folder / "config.json",
            f"not a RadGraph (DyGIE) config: {error!r}",
            "give the released config.json",
        ) from error
    return config


def _bert_folder(model: RadGraphModel, config: dict) -> Path:
    """The local folder of the BERT the model was trained on: ``model.bert_folder``, else the
    Hugging Face cache entry of the name in its config (never a download)."""
    if model.bert_folder is not None:
        if not Path(model.bert_folder).is_dir():
            raise BadInputError(
                model.bert_folder,
                "BERT folder not found",
                "give a local folder with its config and tokenizer",
            )
        return Path(model.bert_folder)
    name = config["model"]["embedder"]["token_embedders"]["bert"]["model_name"]
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception as error:  # huggingface_hub's not-in-cache errors differ between versions
        raise BadInputError(
            Path(model.folder) / "config.json",
            f"its BERT {name!r} is not in the local Hugging Face cache ({type(error).__name__})",
            "give --radgraph-bert with a local copy of that model (config, weights, tokenizer)",
        ) from error
