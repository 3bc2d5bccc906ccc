from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One thread: on a shared 2-core CPU, 2 torch threads made a tiny VQ-GAN batch ~40x slower (0.83 s vs 0.019 s).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LLMCXR_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The read-only shared data folder; tests that need it skip with the reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set LLMCXR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def cache_in_tmp(tmp_path_factory) -> Path:
    """Caches that outlive a run (``llmcxr.evaluation.run_folder.cache_dir``) go to a temporary folder, not ~/.cache."""
    folder = tmp_path_factory.mktemp("llmcxr-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMCXR_CACHE", str(folder))
        yield folder
