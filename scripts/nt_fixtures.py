"""Reference eNTKs from neural-tangents, written as .npz fixtures for tests/test_neural_tangents.py.

Runs only in neural-tangents' pinned environment (``bash scripts/nt_env.sh`` builds it and runs this):
JAX 0.4.38, Flax 0.10.2, neural-tangents 0.6.5, the last combination where it imports. For an MLP
and a small Flax transformer it saves the inputs, the parameters and
``empirical_ntk_fn(f, trace_axes=(), implementation=...)(x1, x2, params)``, ``[n1, n2, c, c]``, for
JACOBIAN_CONTRACTION and NTK_VECTOR_PRODUCTS, in float64.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_models import Transformer, flatten, mlp, mlp_params, transformer  # noqa: E402

IMPLEMENTATIONS = {
    "jacobian_contraction": nt.NtkImplementation.JACOBIAN_CONTRACTION,
    "ntk_vector_products": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
}


def write(name: str, f, params: dict, x1: np.ndarray, x2: np.ndarray, out: Path) -> None:
    arrays = {"x1": x1, "x2": x2, **{f"params/{k}": v for k, v in flatten(params).items()}}
    for label, implementation in IMPLEMENTATIONS.items():
        kernel_fn = nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=implementation)
        arrays[f"kernel/{label}"] = np.asarray(kernel_fn(jnp.asarray(x1), jnp.asarray(x2), params))
    path = out / f"nt_{name}.npz"
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: kernel {arrays['kernel/jacobian_contraction'].shape}, neural-tangents {nt.__version__}")


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write("mlp", mlp, jax.tree_util.tree_map(jnp.asarray, mlp_params(rng)),
          rng.normal(size=(5, 6)), rng.normal(size=(4, 6)), out)
    x1, x2 = rng.normal(size=(4, 5, 6)), rng.normal(size=(3, 5, 6))
    params = Transformer().init(jax.random.PRNGKey(0), jnp.asarray(x1))["params"]
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    params = jax.tree_util.tree_map(lambda a: a + 0.05 * jnp.asarray(rng.normal(size=a.shape)), params)
    write("transformer", transformer, params, x1, x2, out)


if __name__ == "__main__":
    main()
