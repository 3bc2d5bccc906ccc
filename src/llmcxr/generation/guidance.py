"""Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance") for
report -> CXR and for CXR -> report.

Training leaves the condition out of a fraction of samples: the report of report -> CXR samples
(``TrainRecipe.unconditional_fraction``), the image of CXR -> report samples
(``unconditional_report_fraction``); ``llmcxr.training.tasks`` writes the same prompt with
``Input:`` left empty, ``NULL_REPORT``. At generation each conditional row gets a twin with that
empty input; both run in one batch through the same KV cache, and the next-token distribution is

    log p_guided = log p(x | empty) + s * (log p(x | condition) - log p(x | empty))

(as ``transformers.ClassifierFreeGuidanceLogitsProcessor`` and Sanchez et al. 2023, "Stay on topic
with Classifier-Free Guidance"). s = 1 is plain conditional sampling; s > 1 pushes the image towards
what the report says and away from the average image, or the report towards what the image shows and
away from the average report. transformers' own CFG processors do not fit:
``ClassifierFreeGuidanceLogitsProcessor`` halves the batch inside ``generate`` (MusicGen only), and
``UnbatchedClassifierFreeGuidanceLogitsProcessor`` runs the unconditional prompt as a second,
separate forward pass per step; here both halves share one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmcxr.prompt.dolly import NULL_REPORT, PromptParts

# The scale a model is used with by default is its folder's recommendation
# (llmcxr.model.GenerationDefaults): the shipped model's evaluation chose 3 for images and 1.5 for reports;
# a model trained for minutes, or the converted official one (never trained with a dropped condition),
# gains nothing from it: 1.


def unconditional_parts(instruction: str) -> PromptParts:
    """The prompt training used for a dropped condition (report or image): same instruction, empty ``Input:``."""
    return PromptParts(instruction=instruction, input=NULL_REPORT, response=None)


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Guided next-token log-probabilities (B, V) from conditional and unconditional logits (B, V)."""
    cond = torch.log_softmax(cond.float(), dim=-1)
    uncond = torch.log_softmax(uncond.float(), dim=-1)
    if scale == 1.0:  # exactly the conditional distribution (avoids inf - inf where a logit is -inf)
        return cond
    return uncond + scale * (cond - uncond)


@dataclass
class Guidance:
    """Unconditional twins of a batch of prompts (one per prompt, same order) and the guidance scale."""

    unconditional_prompts: list[list[int]]  # token ids of ``unconditional_parts(...)`` per row
    scale: float  # s above; 1.0 = no guidance (the unconditional rows change nothing)
