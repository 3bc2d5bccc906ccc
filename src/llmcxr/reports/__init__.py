"""Reading reports: sections, cleaning, the CheXpert-14 labeler, and VQA pairs from labels."""

from llmcxr.reports.chexbert import CheXbertLabeler, convert_chexbert
from llmcxr.reports.labeler import FindingMention, LabeledReport, Labeler, RuleLabeler, label_report
from llmcxr.reports.sections import ReportSections, clean_report_text, parse_mimic_report
from llmcxr.reports.vqa import generate_qa, qa_seed, read_vqa_jsonl, write_vqa_jsonl

__all__ = [
    "CheXbertLabeler",
    "FindingMention",
    "LabeledReport",
    "Labeler",
    "ReportSections",
    "RuleLabeler",
    "clean_report_text",
    "convert_chexbert",
    "generate_qa",
    "label_report",
    "parse_mimic_report",
    "qa_seed",
    "read_vqa_jsonl",
    "write_vqa_jsonl",
]
