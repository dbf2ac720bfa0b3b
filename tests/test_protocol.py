"""The comparison as a library: README's example runs, the stages give what run gives, the config is
checked when made."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ntk_lab.errors import NtkLabError
from ntk_lab.protocol import CompareConfig

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readmes_library_example_runs_and_its_stages_agree_with_run(tmp_path, monkeypatch) -> None:
    code = re.search(r"```python\n(from ntk_lab.protocol import .*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    results, record = scope["results"], scope["record"]
    from_run = next(r for r in results.runs if r["method"] == "kernel-sgd")
    assert record["accuracy"] == from_run["accuracy"] and record["lambda"] == from_run["lambda"]
    assert {r["method"] for r in results.as_json()["runs"]} == {"zero-shot", "kernel-sgd"}
    assert "kernel-sgd" in results.table() and results.config.optimizers == ()
    # the kernel diagnostics describe the train kernel the record was fitted with
    import numpy as np

    from ntk_lab.solvers import targets

    k, y = np.asarray(scope["arrays"]["k_train"], np.float64), targets(scope["data"].y["train"], 1)
    flat = k.reshape(len(y), len(y))
    assert record["target_alignment"] == pytest.approx(float(y[:, 0] @ flat @ y[:, 0] / (np.linalg.norm(flat) * len(y))))
    np.testing.assert_allclose(record["spectrum"], np.linalg.eigvalsh(flat)[::-1], rtol=1e-6, atol=1e-6 * record["spectrum"][0])
    assert 1 <= record["effective_rank"] <= len(y) and record["effective_rank"] == from_run["effective_rank"]
    assert "kernel-sgd target_alignment" in results.table()


@pytest.mark.parametrize("change, message", [
    ({"seeds": ()}, "--seeds names no seed"),
    ({"kernels": ("adam",)}, "--kernels: unknown ['adam']"),
    ({"implementation": "fast"}, "--implementation: unknown ['fast']"),
    ({"lr_adam": (float("nan"),)}, "--lr-adam must be positive finite numbers"),
    ({"k": 0}, "--k must be at least 1"),
    ({"subsets": ("lora",)}, "unknown subset 'lora'"),
])
def test_config_is_checked_when_made(change, message) -> None:
    with pytest.raises(NtkLabError, match=re.escape(message)):
        CompareConfig(task="sst2", **change)
    config = CompareConfig(task="sst2", seeds=[1, 2])
    assert config.seeds == (1, 2) and config.lrs["sgd"] == (1e-4, 1e-3, 1e-2)
    with pytest.raises(AttributeError):
        config.k = 3  # frozen
