"""Shared fixtures: an isolated cache per test session, and the real SST-2 where it exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "SST-2"


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("NTK_LAB_CACHE", str(tmp_path_factory.mktemp("ntk_lab_cache")))


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    """``../shared/data/SST-2`` (the real GLUE SST-2); tests that need it skip where it is absent."""
    if not (SHARED_SST2 / "train.tsv").exists():
        pytest.skip("real SST-2 not found at ../shared/data/SST-2")
    return SHARED_SST2


@pytest.fixture(scope="session")
def tiny():
    from ntk_lab.models import load_masked_lm

    return load_masked_lm("tiny")


@pytest.fixture(scope="session")
def tiny_bert():
    from ntk_lab.models import load_masked_lm

    return load_masked_lm("tiny-bert")
