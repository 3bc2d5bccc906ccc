"""Synthetic paired chest X-ray world: a procedural renderer plus reports, labels and VQA."""

from llmcxr.synth.iu_reports import find_iu_reports
from llmcxr.synth.render import (
    FindingSpec,
    Lesion,
    Opacity,
    Rendering,
    cardiothoracic_ratio,
    render_cxr,
    render_study,
)
from llmcxr.synth.templates import compose_report, sample_spec
from llmcxr.synth.world import build_world, spec_from_report

__all__ = [
    "FindingSpec",
    "Lesion",
    "Opacity",
    "Rendering",
    "build_world",
    "cardiothoracic_ratio",
    "compose_report",
    "find_iu_reports",
    "render_cxr",
    "render_study",
    "sample_spec",
    "spec_from_report",
]
