"""Teacher-forced log-likelihood of a response: how likely the model finds a given answer.

One model both reads and draws CXRs, so each direction can check the other: an image drawn for a
report is more faithful when the reading direction finds that report likely given the image
(``LLMCXR.generate_image(..., candidates=k)`` keeps the best of k draws by it), and a report written
for an image when the drawing direction finds that image likely given the report
(``LLMCXR.report(..., candidates=k)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from llmcxr.prompt import IGNORE_INDEX, Example


@torch.no_grad()
def response_log_likelihood(
    model: torch.nn.Module, examples: Sequence[Example], pad_id: int, batch_size: int = 16
) -> np.ndarray:
    """Sum of log p(token | everything before it) over each example's scored tokens (labels != -100).

    ``encode_parts`` scores the response and its closing ``### End``, so this is log p(response, end |
    prompt). Rows are right-padded: positions count from 0 at each row's first token, as in training.
    """
    device = next(model.parameters()).device
    totals: list[float] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, example in enumerate(chunk):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            mask[row, :n] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
        targets = labels[:, 1:].to(device)  # the token each position predicts
        scored = targets != IGNORE_INDEX
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
        totals += (log_probs.squeeze(-1) * scored).sum(dim=1).tolist()
    return np.asarray(totals, dtype=np.float64)
