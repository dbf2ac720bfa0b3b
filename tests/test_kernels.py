"""The eNTK engine against brute-force explicit Jacobians (x64: < 1e-10; float32 HIGHEST: < 1e-5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntk_lab.jacobians import as_columns, contract, contract_columns, on_one_example
from ntk_lab.kernels import (
    AUTO_JACOBIAN_BYTES,
    AUTO_STRUCTURED_PARAMS,
    IMPLEMENTATIONS,
    KINDS,
    SGD_ONLY,
    YNN_FUSIONS,
    _compiles_with,
    auto_implementation,
    cpu_compiler_options,
    entk_fn,
)
from ntk_lab.pytrees import count_params, path_names, restrict
from ntk_lab.sketch import sketch_error_std, sketch_kernel
from ntk_lab.structured import _dot_kernel, _gather_kernel, _taps

SIGN_EPS = 1e-8  # Adam's ε: |g| <= ε has no sign (see jacobians.adam_sign)


def mlp_init(key: jax.Array, widths: list[int], dtype=jnp.float64) -> list[dict[str, jax.Array]]:
    keys = jax.random.split(key, len(widths) - 1)
    return [
        {"w": jax.random.normal(k, (a, b), dtype), "b": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (b,), dtype)}
        for k, a, b in zip(keys, widths[:-1], widths[1:])
    ]


def mlp(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """``[n, d] -> [n, c]``, NTK parameterization, tanh hidden units."""
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] / np.sqrt(x.shape[-1]) + layer["b"])
    return x @ params[-1]["w"] / np.sqrt(x.shape[-1]) + params[-1]["b"]


def brute_force(f, params, x1, x2, kind, param_filter=None, binary=False) -> np.ndarray:
    """Whole-batch Jacobians over the raveled moving parameters, contracted in numpy."""
    return contract_kind(*brute_jacobians(f, params, x1, x2, param_filter, binary), kind)


def brute_jacobians(f, params, x1, x2, param_filter=None, binary=False, jit=False) -> tuple[np.ndarray, np.ndarray]:
    """``(J(x1), J(x2))``, each ``[n, c, P]`` over the raveled moving parameters (``jit``: in one XLA
    program each, for a model too large for op-by-op differentiation)."""
    g, theta = restrict(f, params, param_filter)
    flat, unravel = ravel_pytree(theta)

    def jac(x):
        out = lambda v: g(unravel(v), x)
        if binary:
            out = (lambda h: lambda v: (h(v)[:, 1] - h(v)[:, 0])[:, None])(out)
        return np.asarray((jax.jit(jax.jacrev(out)) if jit else jax.jacrev(out))(flat))

    return jac(x1), jac(x2)


def contract_kind(j1: np.ndarray, j2: np.ndarray, kind: str) -> np.ndarray:
    """The ``kind`` kernel ``[n1, c, n2, c]`` of two Jacobians ``[n, c, P]``: x1's side signed for the sign
    kinds, x2's for signgd."""
    sign = lambda j: np.sign(j) * (np.abs(j) > SIGN_EPS)
    return np.einsum("iap,jbp->iajb", sign(j1) if kind != "sgd" else j1, sign(j2) if kind == "signgd" else j2)


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


CASES = [(kind, impl) for kind in KINDS for impl in IMPLEMENTATIONS if not (impl in SGD_ONLY and kind != "sgd")]


@pytest.mark.parametrize("kind,implementation", CASES)
def test_mlp_kernels_match_brute_force_x64(kind: str, implementation: str) -> None:
    with jax.enable_x64(True):
        params = mlp_init(jax.random.PRNGKey(0), [5, 16, 12, 3])
        x1 = jax.random.normal(jax.random.PRNGKey(1), (7, 5), jnp.float64)
        x2 = jax.random.normal(jax.random.PRNGKey(2), (4, 5), jnp.float64)
        kernel = entk_fn(mlp, kind=kind, implementation=implementation, chunk=3)
        for a, b in ((x1, x2), (x1, None)):
            got = kernel(params, a, b)
            expected = brute_force(mlp, params, a, a if b is None else b, kind)
            assert got.shape == expected.shape
            assert rel_err(got, expected) < 1e-10


@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_jacobian_as_one_program_or_split_x64(kind: str, split: bool) -> None:
    """``split`` (two XLA programs, the side with fewer examples as columns) and the one program
    both match brute force, x2 given (larger or smaller than x1) or not."""
    with jax.enable_x64(True):
        params = mlp_init(jax.random.PRNGKey(15), [5, 9, 3])
        x1 = jax.random.normal(jax.random.PRNGKey(16), (6, 5), jnp.float64)
        x2 = jax.random.normal(jax.random.PRNGKey(17), (4, 5), jnp.float64)
        kernel = entk_fn(mlp, kind=kind, split=split)
        for a, b in ((x1, x2), (x2, x1), (x1, None)):
            expected = brute_force(mlp, params, a, a if b is None else b, kind)
            assert rel_err(kernel(params, a, b), expected) < 1e-10
            assert rel_err(jax.jit(kernel)(params, a, b), expected) < 1e-10


def test_contract_columns_is_contract_x64() -> None:
    """Either side's Jacobian as columns ``[p, n·c]`` gives the same Gram, leaf shapes of any rank, n1 != n2."""
    with jax.enable_x64(True):
        shapes = [(3,), (4, 5), (2, 3, 2)]
        keys = jax.random.split(jax.random.PRNGKey(21), 2 * len(shapes))
        j1 = [jax.random.normal(k, (7, 3, *s), jnp.float64) for k, s in zip(keys[::2], shapes)]
        j2 = [jax.random.normal(k, (4, 3, *s), jnp.float64) for k, s in zip(keys[1::2], shapes)]
        flat = lambda j: np.concatenate([np.asarray(v).reshape(v.shape[0] * 3, -1) for v in j], axis=1)
        expected = (flat(j1) @ flat(j2).T).reshape(7, 3, 4, 3)
        assert [v.shape for v in as_columns(j2)] == [(3, 12), (20, 12), (12, 12)]
        assert rel_err(contract_columns(j1, as_columns(j2)), expected) < 1e-14
        assert rel_err(contract_columns(j2, as_columns(j1)).transpose(2, 3, 0, 1), expected) < 1e-14
        assert rel_err(contract(j1, j2), expected) < 1e-14


@pytest.mark.parametrize("kind", KINDS)
def test_filter_and_binary_mode_x64(kind: str) -> None:
    with jax.enable_x64(True):
        params = mlp_init(jax.random.PRNGKey(3), [4, 10, 2])
        x1 = jax.random.normal(jax.random.PRNGKey(4), (5, 4), jnp.float64)
        x2 = jax.random.normal(jax.random.PRNGKey(5), (3, 4), jnp.float64)
        biases = lambda path: path[-1] == "b"
        for implementation in ("jacobian", "streamed"):
            got = entk_fn(mlp, kind=kind, implementation=implementation, param_filter=biases, binary=True, chunk=2)(
                params, x1, x2)
            expected = brute_force(mlp, params, x1, x2, kind, param_filter=biases, binary=True)
            assert got.shape == (5, 1, 3, 1)
            assert rel_err(got, expected) < 1e-10
        assert count_params(params, biases) == 12


def test_sgd_kernel_is_symmetric_psd_and_asigngd_is_not_symmetric() -> None:
    with jax.enable_x64(True):
        params = mlp_init(jax.random.PRNGKey(6), [3, 8, 2])
        x = jax.random.normal(jax.random.PRNGKey(7), (6, 3), jnp.float64)
        k = np.asarray(entk_fn(mlp, kind="sgd")(params, x)).reshape(12, 12)
        np.testing.assert_allclose(k, k.T, atol=1e-12)
        assert np.linalg.eigvalsh(k).min() > -1e-10
        a = np.asarray(entk_fn(mlp, kind="asigngd")(params, x)).reshape(12, 12)
        assert np.abs(a - a.T).max() > 1e-3


@pytest.fixture(scope="module")
def tiny_x64():
    """The tiny RoBERTa's prompted classifier in float64 on 3 x 2 examples, and a cache of the
    brute-force Jacobians (computed once for every kind and implementation)."""
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import PromptedClassifier, encode
    from ntk_lab.tasks import TASKS, Example

    with jax.enable_x64(True):
        model = load_masked_lm("tiny", dtype=jnp.float64)
        task = TASKS["sst2"]
        f = PromptedClassifier.for_task(model, task)
        texts = ["the film was dull .", "a truly superb cast", "warm", "the plot is flat and messy ."]
        batch = {k: jnp.asarray(v) for k, v in encode(task, [Example({"S": t}, 0) for t in texts], model.tokenizer).items()
                 if k != "labels"}
    return f, model.params, {k: v[:3] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}, {}


# The MLP cases cover every (kind, implementation); on the transformer, the sign kinds of streamed and
# blocked share code with the cases kept (streamed's signgd is blocked's path) and run with -m slow.
TINY_CASES = [case if case[0] == "sgd" or case[1] == "jacobian" else pytest.param(*case, marks=pytest.mark.slow)
              for case in CASES]


@pytest.mark.parametrize("kind,implementation", TINY_CASES)
def test_tiny_masked_lm_kernels_match_brute_force(tiny_x64, kind: str, implementation: str) -> None:
    """The prompted classifier of the tiny RoBERTa in float64: every implementation < 1e-10."""
    f, params, x1, x2, expected = tiny_x64
    no_embeddings = lambda path: path[0] != "embeddings"
    with jax.enable_x64(True):
        got = entk_fn(f, kind=kind, implementation=implementation, param_filter=no_embeddings, chunk=2)(params, x1, x2)
        if "jacobians" not in expected:
            expected["jacobians"] = brute_jacobians(f, params, x1, x2, param_filter=no_embeddings, jit=True)
    assert got.shape == (3, 2, 2, 2)
    assert rel_err(got, contract_kind(*expected["jacobians"], kind)) < 1e-10


@pytest.mark.parametrize("options", ["tuned", "xla default"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_float32_with_highest_precision_within_1e5(implementation: str, options: str) -> None:
    """Both with the XLA options ``entk_fn`` picks on CPU (``cpu_compiler_options``) and with none."""
    params32 = mlp_init(jax.random.PRNGKey(8), [6, 32, 32, 2], jnp.float32)
    x1 = jax.random.normal(jax.random.PRNGKey(9), (6, 6))
    x2 = jax.random.normal(jax.random.PRNGKey(10), (5, 6))
    with jax.default_matmul_precision("highest"):
        kernel = entk_fn(mlp, implementation=implementation, chunk=4, compiler_options=None if options == "tuned" else {})
        got = kernel(params32, x1, x2)
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params32)
        expected = brute_force(mlp, p64, jnp.asarray(x1, jnp.float64), jnp.asarray(x2, jnp.float64), "sgd")
    assert rel_err(got, expected) < 1e-5


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_kernel_runs_inside_the_callers_jit_x64(implementation: str) -> None:
    """``jax.jit(kernel)`` (our XLA options are for a top-level jit only) gives the same kernel."""
    with jax.enable_x64(True):
        params = mlp_init(jax.random.PRNGKey(12), [4, 8, 8, 2])
        x1 = jax.random.normal(jax.random.PRNGKey(13), (5, 4))
        x2 = jax.random.normal(jax.random.PRNGKey(14), (3, 4))
        kernel = entk_fn(mlp, implementation=implementation, chunk=2)
        assert rel_err(jax.jit(kernel)(params, x1, x2), brute_force(mlp, params, x1, x2, "sgd")) < 1e-10


def test_cpu_compiler_options_are_known_to_this_jaxlib() -> None:
    """The YNNPACK choice is an XLA option this jaxlib accepts (it would silently be dropped otherwise);
    one it does not know is left out rather than failing every kernel."""
    assert cpu_compiler_options("jacobian") == {YNN_FUSIONS: ""}
    assert cpu_compiler_options("structured") == {YNN_FUSIONS: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    assert not _compiles_with((("xla_cpu_no_such_option", ""),))


def signed_jacobians(f, params, x, signed: bool) -> np.ndarray:
    """Rows ``[n·c, P]`` of the (Adam-signed) Jacobian over all parameters, in numpy."""
    flat, unravel = ravel_pytree(params)
    j = np.asarray(jax.jacrev(lambda v: f(unravel(v), x))(flat)).reshape(-1, flat.size)
    return np.sign(j) * (np.abs(j) > SIGN_EPS) if signed else j


@pytest.mark.parametrize("kind,sketch", [("asigngd", "gaussian"), ("signgd", "sparse")])
def test_sketch_is_unbiased_with_the_closed_form_variance_x64(kind: str, sketch: str) -> None:
    """Over 400 projections: mean error within 4.5 standard errors of 0 on every entry, and the
    measured variance / the docstring's closed form in [0.8, 1.25] averaged over the entries.
    The API draws the same projection from the same key, whatever the batch.
    (A-SignGD signs one side only and SignGD both, so the two cases cover every feature map.)"""
    with jax.enable_x64(True):
        params = mlp_init(jax.random.PRNGKey(11), [5, 12, 12, 2])
        x1 = jax.random.normal(jax.random.PRNGKey(12), (3, 5))
        x2 = jax.random.normal(jax.random.PRNGKey(13), (4, 5))
        dim, draws = 16, 400
        g, theta = restrict(mlp, params, None)
        one = lambda key: sketch_kernel(g, theta, x1, x2, kind, key, dim, sketch, 64, 2, SIGN_EPS)
        keys = jax.random.split(jax.random.PRNGKey(14), draws)
        samples = np.asarray(jax.jit(jax.vmap(one))(keys)).reshape(draws, 6, 8)
        kernel = entk_fn(mlp, kind=kind, implementation="sketch", sketch=sketch, sketch_dim=dim, sketch_key=keys[0],
                         sketch_block=64, chunk=2)
        api = np.asarray(kernel(params, x1, x2))  # numpy: the checks below stay float64 outside x64 mode
        whole = np.asarray(kernel(params, jnp.concatenate([x1, x2])))
        exact = brute_force(mlp, params, x1, x2, kind).reshape(6, 8)
        u = signed_jacobians(mlp, params, x1, kind != "sgd")
        v = signed_jacobians(mlp, params, x2, kind == "signgd")
    assert api.dtype == whole.dtype == samples.dtype == np.float64
    assert rel_err(api.reshape(6, 8), samples[0]) < 1e-12  # the API draws the same S from the same key
    assert rel_err(whole[:3, :, 3:], api) < 1e-12  # one S for every batch: K(x1 ∪ x2) holds K(x1, x2)
    std = sketch_error_std(u, v, dim, sketch)
    z = (samples.mean(0) - exact) / (std / np.sqrt(draws))
    assert np.abs(z).max() < 4.5
    ratio = (samples.var(0) / std**2).mean()
    assert 0.8 < ratio < 1.25, ratio


@pytest.mark.parametrize("u,k,f,regime", [(1, 7, 5, "token pairs"), (24, 3, 4, "per-example gradients")])
def test_factor_kernel_is_the_gram_of_the_outer_product_gradients_x64(u: int, k: int, f: int, regime: str) -> None:
    """Both ways of contracting one dense weight's factors give <Σ_u h_iu ⊗ δ_iau, Σ_v h_jv ⊗ δ_jbv>."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        h1, h2 = rng.standard_normal((3, u, k)), rng.standard_normal((4, u, k))
        d1, d2 = rng.standard_normal((3, 2, u, f)), rng.standard_normal((4, 2, u, f))
        g1, g2 = np.einsum("iuk,iauf->iakf", h1, d1), np.einsum("iuk,iauf->iakf", h2, d2)
        expected = np.einsum("iakf,jbkf->iajb", g1, g2)
        pairs = 3 * 4 * u * u * (k + 4 * f) <= (3 * u + 4 * u) * 2 * k * f + 3 * 4 * 4 * k * f
        assert pairs == (regime == "token pairs")
        assert rel_err(_dot_kernel(*map(jnp.asarray, (h1, d1, h2, d2))), expected) < 1e-12


def test_structured_taps_the_dense_weights_and_embedding_tables_of_the_tiny_lm(tiny_x64) -> None:
    """In f's jaxpr of the tiny RoBERTa the structured implementation finds the 13 dense kernels (2
    layers x (q, k, v, attention out, FFN in, FFN out) and the LM head's dense) and the row lookups of
    the word (input ids and label rows), position and token-type tables and the decoder bias; with
    every parameter moving, every kind's kernel matches the one contracted from the explicit Jacobians
    (computed once) to 1e-10 (x64)."""
    f, params, x1, x2, _ = tiny_x64
    g, theta = restrict(f, params, None)
    names = ["/".join(path_names(p)) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    with jax.enable_x64(True):
        jaxpr = jax.make_jaxpr(on_one_example(g))(theta, jax.tree_util.tree_map(lambda a: a[0], x1)).jaxpr
        taps = list(_taps(jaxpr, len(theta)).values())
        dots = [names[leaf] for leaf, kind, _ in taps if kind == "dot"]
        gathers = sorted(names[leaf] for leaf, kind, _ in taps if kind == "gather")
        assert len(dots) == 13 and all(name.endswith("kernel") for name in dots), dots
        assert len(gathers) == 5 and len(set(gathers)) == 4, gathers  # the word table twice
        assert sum("word_embeddings" in n for n in gathers) == 2, gathers
        j1, j2 = brute_jacobians(f, params, x1, x2, jit=True)  # every parameter moving
        for kind in KINDS:
            got = entk_fn(f, kind=kind, implementation="structured")(params, x1, x2)
            assert rel_err(got, contract_kind(j1, j2, kind)) < 1e-10, kind


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows", [6, 10_000])
def test_embedding_kernel_counts_each_row_once_x64(kind: str, rows: int) -> None:
    """An embedding table's kernel from its lookups equals the Gram of the explicit per-example
    gradients (scattered, then signed for the sign kinds), with tokens repeated within an example: as
    token pairs (a large table) and scattered (a small one)."""
    n1, n2, c, u, f = 4, 3, 2, 7, 5
    rng = np.random.default_rng(0)
    ids1, ids2 = rng.integers(0, 6, (n1, u)), rng.integers(0, 6, (n2, u))
    d1, d2 = rng.normal(size=(n1, c, u, f)), rng.normal(size=(n2, c, u, f))
    assert any(len(set(row)) < u for row in ids1)  # repeats within an example

    def gradients(ids, d):  # [n, c, rows, F]
        g = np.zeros((len(ids), c, rows, f))
        for i in range(len(ids)):
            np.add.at(g[i], (slice(None), ids[i]), d[i])
        return g

    g1, g2 = gradients(ids1, d1), gradients(ids2, d2)
    expected = np.einsum("iarf,jbrf->iajb", np.sign(g1) if kind != "sgd" else g1, np.sign(g2) if kind == "signgd" else g2)
    with jax.enable_x64(True):
        got = _gather_kernel(*map(jnp.asarray, (ids1, d1, ids2, d2)), rows, kind, 1e-8)
    assert rel_err(got, expected) < 1e-12


def test_bad_arguments() -> None:
    for implementation in SGD_ONLY:
        with pytest.raises(ValueError, match="sgd kernel only"):
            entk_fn(mlp, kind="signgd", implementation=implementation)
    with pytest.raises(ValueError, match="kind must be one of"):
        entk_fn(mlp, kind="adam")
    with pytest.raises(ValueError, match="sketch must be one of"):
        entk_fn(mlp, implementation="sketch", sketch="srht")
    with pytest.raises(ValueError, match="selects no parameters"):
        entk_fn(mlp, param_filter=lambda p: False)(mlp_init(jax.random.PRNGKey(0), [2, 2], jnp.float32), jnp.ones((1, 2)))


def test_auto_follows_its_rule_and_gives_the_exact_kernel() -> None:
    """The rule at its thresholds, what a call chooses, and the kernel it returns."""
    assert auto_implementation("sgd", AUTO_STRUCTURED_PARAMS - 1, 16, 64, 2) == "jacobian"
    assert auto_implementation("sgd", AUTO_STRUCTURED_PARAMS, 16, 64, 2) == "structured"
    fits = AUTO_JACOBIAN_BYTES // (4 * 2 * (16 + 872))  # the paper's kernel: 16 train x 872 test
    assert fits < AUTO_STRUCTURED_PARAMS
    assert auto_implementation("asigngd", fits, 16, 872, 2) == "jacobian"
    assert auto_implementation("signgd", fits + 1, 16, 872, 2) == "structured"
    assert auto_implementation("sgd", fits + 1, 16, 872, 2) == "jacobian"
    for kind in KINDS:
        assert auto_implementation(kind, AUTO_STRUCTURED_PARAMS, 1, 1, 1) == "structured"
    small = mlp_init(jax.random.PRNGKey(0), [5, 16, 2], jnp.float32)
    big = mlp_init(jax.random.PRNGKey(0), [5, 1024, 1024, 2], jnp.float32)  # 1.06M parameters
    x1, x2 = jax.random.normal(jax.random.PRNGKey(1), (3, 5)), jax.random.normal(jax.random.PRNGKey(2), (4, 5))
    assert entk_fn(mlp, implementation="auto").choose(small, x1, x2) == "jacobian"
    assert entk_fn(mlp, implementation="auto").choose(big, x1, x2) == "structured"
    assert entk_fn(mlp, kind="asigngd", implementation="auto").choose(big, x1, x2) == "structured"
    assert entk_fn(mlp, kind="asigngd", implementation="auto").choose(small, x1, x2) == "jacobian"
    for kind in KINDS:
        got = entk_fn(mlp, kind=kind, implementation="auto", binary=True)(big, x1, x2)
        want = entk_fn(mlp, kind=kind, implementation="streamed", binary=True)(big, x1, x2)
        assert got.shape == (3, 1, 4, 1) and rel_err(got, want) < 1e-5, kind


def _dot_precisions(jaxpr) -> list:
    """The ``precision`` of every ``dot_general`` in ``jaxpr`` and the jaxprs nested in its equations."""
    found = []
    for e in jaxpr.eqns:
        if e.primitive.name == "dot_general":
            found.append(e.params["precision"])
        for value in e.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found.extend(_dot_precisions(inner))
    return found


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_precision_policy_traces_every_product_in_float32(implementation: str) -> None:
    """Whatever the caller's default matmul precision (here bfloat16, as a TPU's), every product in
    the kernel's programs, the model's passes and the contractions, is traced at HIGHEST (full
    float32); ``precision="default"`` leaves the caller's setting to the model's products."""
    params = mlp_init(jax.random.PRNGKey(8), [6, 8, 2], jnp.float32)
    x1, x2 = jnp.ones((3, 6)), jnp.ones((2, 6))
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    kind = "sgd" if implementation in SGD_ONLY else "asigngd"
    for precision, expect_all_highest in (("float32", True), ("default", False)):
        kernel = entk_fn(mlp, kind=kind, implementation=implementation, chunk=2, precision=precision)
        with jax.default_matmul_precision("bfloat16"):
            found = _dot_precisions(jax.make_jaxpr(kernel)(params, x1, x2).jaxpr)
        assert found, "no dot_general traced"
        assert all(p == highest for p in found) == expect_all_highest, (precision, found)
    with pytest.raises(ValueError, match="precision must be one of"):
        entk_fn(mlp, precision="float16")
