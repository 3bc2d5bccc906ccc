"""The shared vocabulary of findings: the 14 CheXpert observations and their label values.

Labeler, VQA generator, synthetic renderer and evaluation all speak in these names.
"""

from __future__ import annotations

from enum import IntEnum

# Irvin et al., "CheXpert" (AAAI 2019), Table 1 order.
CHEXPERT_14: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The five classes most papers report (CheXpert competition tasks): micro/macro-F1-5.
CHEXPERT_5: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)


class Mention(IntEnum):
    """How a report states one observation. Not mentioned is ``None`` in a labels dict."""

    NEGATIVE = 0
    POSITIVE = 1
    UNCERTAIN = -1


class Side(IntEnum):
    LEFT = 1
    RIGHT = 2
    BILATERAL = 3


# labels: finding name -> Mention, absent key = not mentioned.
ReportLabels = dict[str, Mention]
