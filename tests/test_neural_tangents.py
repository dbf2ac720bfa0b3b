"""Our eNTK against neural-tangents 0.6.5 (fixtures from scripts/nt_fixtures.py): relative error < 1e-5."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from ntk_lab.kernels import IMPLEMENTATIONS, entk_fn
from tests.reference_models import mlp, transformer, unflatten

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = {"mlp": mlp, "transformer": transformer}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_sgd_kernel_matches_neural_tangents(name: str, implementation: str) -> None:
    data = np.load(FIXTURES / f"nt_{name}.npz")
    params = {k[len("params/"):]: data[k] for k in data.files if k.startswith("params/")}
    with jax.enable_x64(True):
        ours = np.asarray(entk_fn(MODELS[name], implementation=implementation, chunk=4)(
            unflatten(params), data["x1"], data["x2"]))
    for reference in ("jacobian_contraction", "ntk_vector_products"):
        theirs = data[f"kernel/{reference}"].transpose(0, 2, 1, 3)  # [n1, n2, c, c] -> [n1, c, n2, c]
        assert ours.shape == theirs.shape
        assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-5
