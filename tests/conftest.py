"""Shared fixtures: an isolated cache per test session, and the real SST-2 where it exists.

Every process of a session (both xdist workers, the notebooks' kernels, the CLI subprocesses) shares
one JAX compilation cache, so a program compiled once (the tiny model's kernels, fine-tuning steps) is
not compiled again in the next process. It is keyed by the program and JAX's version, starts empty
with each session (timings stay those of a fresh clone) and is removed when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED_SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "SST-2"
_SESSION = os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()
JAX_CACHE = Path(tempfile.gettempdir()) / f"ntk_lab_tests_jax_cache_{_SESSION}"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(JAX_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # every program, however fast it compiles


# the slowest files start first, so that neither xdist worker is left with a long test at the end
FIRST = ("test_notebooks.py", "test_compare.py", "test_protocol.py", "test_icl_pretrain.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:
        shutil.rmtree(JAX_CACHE, ignore_errors=True)


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
