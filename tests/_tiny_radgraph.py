"""A tiny random-weight RadGraph model that the ``radgraph`` package loads and runs, built offline.

Written like the release (``radgraph.tar.gz`` extracted)::

    folder/radgraph/config.json      DyGIE config; its BERT is folder/bert (a path, never a download)
    folder/radgraph/vocabulary/      entity and relation label namespaces, named after the model type
    folder/radgraph/weights.th       the DyGIE state dict, built the way ``radgraph.RadGraph`` builds it
    folder/bert/                     a tiny random BERT and a word-piece vocabulary

With random weights every span of up to ``MAX_SPAN_WIDTH`` words comes out as an entity (with some
relations), so identical reports score 1.0 and others less; ``no_entities`` makes the entity scorer
never beat the null label: no entities, every F1 0.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

ENTITY_LABELS = ["ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA"]  # RadGraph's schema
RELATION_LABELS = ["modify", "located_at", "suggestive_of"]
WORDS = "no acute cardiopulmonary process mild moderate pulmonary edema and cardiomegaly unchanged".split()
MAX_SPAN_WIDTH = 4


def make_tiny_radgraph(folder: Path, model_type: str = "radgraph", no_entities: bool = False) -> Path:
    """Write the model under ``folder``; return its model folder (``folder/<model_type>``)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from llmcxr.metrics.radgraph import tokenizer_methods_radgraph_calls

    bert = folder / "bert"
    bert.mkdir(parents=True)
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
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast.from_pretrained(bert, do_lower_case=True).save_pretrained(bert)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(bert)

    model = folder / model_type
    vocabulary = model / "vocabulary"
    vocabulary.mkdir(parents=True)
    (vocabulary / "non_padded_namespaces.txt").write_text("*tags\n*labels\n")
    # label namespaces are unpadded, line i = index i; the entity tagger wants the null label "" at 0
    (vocabulary / f"{model_type}__ner_labels.txt").write_text("\n".join(["", *ENTITY_LABELS]) + "\n")
    (vocabulary / f"{model_type}__relation_labels.txt").write_text("\n".join(RELATION_LABELS) + "\n")
    config = _config(bert.resolve())
    (model / "config.json").write_text(json.dumps(config, indent=2))

    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    with tokenizer_methods_radgraph_calls():
        embedder = token_embedders.PretrainedTransformerMismatchedEmbedder(
            model_name=str(bert.resolve()), max_length=512
        )
    kwargs = {
        k: v
        for k, v in config["model"].items()
        if k not in ("type", "embedder", "initializer", "module_initializer")
    }
    torch.manual_seed(0)
    network = dygie.DyGIE(
        vocab=Vocabulary.from_files(str(vocabulary)),
        embedder=text_field_embedders.BasicTextFieldEmbedder({"bert": embedder}),
        **kwargs,
    )
    if no_entities:
        with torch.no_grad():
            for scorer in network._ner._ner_scorers.values():
                scorer[-1]._module.weight.zero_()
                scorer[-1]._module.bias.fill_(-1e4)
    torch.save(network.state_dict(), model / "weights.th")
    return model


def _config(bert: Path) -> dict:
    indexer = {"type": "pretrained_transformer_mismatched", "max_length": 512, "model_name": str(bert)}
    return {
        "dataset_reader": {
            "type": "dygie",
            "max_span_width": MAX_SPAN_WIDTH,
            "token_indexers": {"bert": indexer},
        },
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": dict(indexer)}},
            "feature_size": 8,
            "feedforward_params": {"dropout": 0.0, "hidden_dims": 16, "num_layers": 2},
            "initializer": {},
            "module_initializer": {},
            "loss_weights": {"coref": 0.0, "events": 0.0, "ner": 1.0, "relation": 1.0},
            "max_span_width": MAX_SPAN_WIDTH,
            "modules": {
                "coref": {"coref_prop": 0, "max_antecedents": 10, "spans_per_word": 0.3},
                "events": {
                    "argument_spans_per_word": 0.8,
                    "loss_weights": {"arguments": 1.0, "trigger": 1.0},
                    "trigger_spans_per_word": 0.3,
                },
                "ner": {},
                "relation": {"spans_per_word": 0.5},
            },
            "target_task": "relation",
        },
    }
