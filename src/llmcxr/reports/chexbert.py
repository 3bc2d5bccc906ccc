"""CheXbert (Smit et al., EMNLP 2020) as a ``Labeler``, for users who have its weights.

CheXbert is BERT-base with 14 linear heads on the [CLS] state, trained on CheXpert-labeler output
and radiologist labels. llmcxr never downloads it: the user passes a local checkpoint and a local
``bert-base-uncased`` folder (config + tokenizer). The released ``chexbert.pth`` is a torch pickle;
``convert_chexbert`` turns it into safetensors once (the only place llmcxr reads a pickle, and then
with ``weights_only=True``), and ``CheXbertLabeler`` loads only safetensors.
"""

from __future__ import annotations

from pathlib import Path

from llmcxr.errors import BadInputError
from llmcxr.findings import CHEXPERT_14, Mention
from llmcxr.reports.labeler import LabeledReport


class CheXbertLabeler:
    """CheXbert (Smit et al., EMNLP 2020): BERT-base + 14 linear heads, from a local checkpoint only.

    ``checkpoint`` is a ``.safetensors`` file converted once from the released ``chexbert.pth`` by
    ``convert_chexbert`` (keys ``bert.*`` and ``linear_heads.<i>.{weight,bias}``); ``bert_folder`` is a local ``bert-base-uncased``
    folder (config + tokenizer). Nothing is ever downloaded. Heads 0-12 have 4 classes (blank,
    positive, negative, uncertain); head 13 (No Finding) has 2 (blank, positive).
    """

    def __init__(self, checkpoint: str | Path, bert_folder: str | Path, device: str = "cpu") -> None:
        checkpoint, bert_folder = Path(checkpoint), Path(bert_folder)
        if not checkpoint.is_file():
            raise BadInputError(
                checkpoint,
                "CheXbert weights not found",
                "download chexbert.pth from the CheXbert authors (github.com/stanfordmlgroup/CheXbert) "
                "and pass its local path; llmcxr never downloads weights",
            )
        if not (bert_folder / "config.json").is_file():
            raise BadInputError(
                bert_folder,
                "no bert-base-uncased config.json here",
                "pass a local folder with the bert-base-uncased config and tokenizer files",
            )
        state = self._load_state(checkpoint)  # before importing transformers: a wrong file fails fast
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel

        state = {k.removeprefix("module."): v for k, v in state.items()}
        self.tokenizer = AutoTokenizer.from_pretrained(bert_folder, local_files_only=True)
        self.bert = BertModel(
            BertConfig.from_pretrained(bert_folder, local_files_only=True), add_pooling_layer=False
        )
        bert_state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
        missing, unexpected = self.bert.load_state_dict(bert_state, strict=False)
        # The released model carries BERT's pooler (unused: CheXbert reads the [CLS] state) and, from
        # older transformers, a position_ids buffer; anything else missing or extra is a wrong file.
        unexpected = [k for k in unexpected if not k.startswith("pooler.") and k != "embeddings.position_ids"]
        if missing or unexpected:
            raise BadInputError(
                checkpoint,
                f"BERT weights do not fit the config in {bert_folder} (missing {missing[:3]}, unexpected {unexpected[:3]})",
                "use the bert-base-uncased config that CheXbert was trained from",
            )
        hidden = self.bert.config.hidden_size
        self.heads = torch.nn.ModuleList([torch.nn.Linear(hidden, 4 if i < 13 else 2) for i in range(14)])
        heads_state = {
            k.removeprefix("linear_heads."): v for k, v in state.items() if k.startswith("linear_heads.")
        }
        try:
            self.heads.load_state_dict(heads_state)
        except RuntimeError as err:
            raise BadInputError(checkpoint, f"CheXbert heads do not fit ({err})", "") from err
        self.device = device
        self.bert.to(device).eval()
        self.heads.to(device).eval()

    @staticmethod
    def _load_state(checkpoint: Path) -> dict:
        if checkpoint.suffix != ".safetensors":
            raise BadInputError(
                checkpoint,
                "CheXbert weights must be a .safetensors file",
                "convert the released chexbert.pth once with `llmcxr data convert-chexbert` (pickle files are "
                "never loaded at run time)",
            )
        from safetensors.torch import load_file

        return load_file(checkpoint)

    # CheXbert's head order (its src/constants.py): the 13 conditions, then No Finding.
    _ORDER = (
        "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
        "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
        "Pleural Other", "Fracture", "Support Devices", "No Finding",
    )  # fmt: skip
    _CLASS = {1: Mention.POSITIVE, 2: Mention.NEGATIVE, 3: Mention.UNCERTAIN}

    def embed(self, reports: list[str]):
        """(N, hidden) float32 numpy: each report's [CLS] state, the vector SembScore compares.

        As CXR-Report-Metric's ``CheXbert/src/encode.py``: whitespace runs (newlines too) become one
        space, at most 512 tokens, an empty report is just [CLS] [SEP]."""
        import numpy as np
        import torch

        rows = []
        with torch.inference_mode():
            for text in reports:
                batch = self.tokenizer(
                    " ".join(str(text).split()), truncation=True, max_length=512, return_tensors="pt"
                ).to(self.device)
                rows.append(self.bert(**batch).last_hidden_state[0, 0].float().cpu().numpy())
        return np.stack(rows) if rows else np.zeros((0, self.bert.config.hidden_size), np.float32)

    def label(self, reports: list[str]) -> list[LabeledReport]:
        import torch

        out = []
        with torch.inference_mode():
            for text in reports:
                batch = self.tokenizer(text, truncation=True, max_length=512, return_tensors="pt").to(
                    self.device
                )
                cls = self.bert(**batch).last_hidden_state[:, 0]  # (1, hidden)
                labels = {}
                for name, head in zip(self._ORDER, self.heads, strict=True):
                    value = int(head(cls).argmax(-1))
                    if value in self._CLASS:
                        labels[name] = self._CLASS[value]
                out.append(LabeledReport(text, {n: labels[n] for n in CHEXPERT_14 if n in labels}))
        return out


def convert_chexbert(pth: str | Path, out: str | Path) -> Path:
    """Explicit one-off conversion of the released ``chexbert.pth`` to safetensors.

    The only place llmcxr reads a pickle-based checkpoint, and then with ``weights_only=True``.
    """
    import torch
    from safetensors.torch import save_file

    from llmcxr.atomic import atomic_path

    pth, out = Path(pth), Path(out)
    if not pth.is_file():
        raise BadInputError(pth, "file not found", "pass the path of the chexbert.pth you downloaded")
    try:
        blob = torch.load(pth, map_location="cpu", weights_only=True)
    except Exception as err:  # a broken or non-weights pickle: say so in one line
        raise BadInputError(pth, f"cannot read as a weights-only torch checkpoint ({err})", "") from err
    state = blob.get("model_state_dict", blob)
    tensors = {
        k.removeprefix("module."): v.contiguous() for k, v in state.items() if hasattr(v, "contiguous")
    }
    if not any(k.startswith("linear_heads.") for k in tensors):
        raise BadInputError(pth, "no linear_heads.* tensors: not a CheXbert checkpoint", "")
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp))
    return out
