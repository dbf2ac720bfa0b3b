"""Empirical neural tangent kernels of any JAX function: SGD, SignGD and A-SignGD, exact.

For ``f(θ, x) -> [n, c]`` and the moving parameters θ (all, or those a ``param_filter`` selects):

    sgd      K[i,a,j,b] = < ∂f_a(x1_i)/∂θ ,      ∂f_b(x2_j)/∂θ >
    signgd   K[i,a,j,b] = < sign ∂f_a(x1_i)/∂θ , sign ∂f_b(x2_j)/∂θ >
    asigngd  K[i,a,j,b] = < sign ∂f_a(x1_i)/∂θ , ∂f_b(x2_j)/∂θ >

where ``sign`` is ``adam_sign``: the sign with Adam's dead zone ``|g| <= ε`` (default ε = 1e-8).

The A-SignGD kernel is asymmetric: the sign sits on the first argument, the training side. In
Adam's early phase (Malladi et al. 2023, Thm. 4.3) an update is a sign-descent step on the training
example's gradient, and the output on any x moves by that signed direction dotted with ∂f(x)/∂θ:
``f(θ - η sign ∇ℓ_i, x) - f(θ, x) ≈ -η sign(ℓ'_i) K_asigngd(x_i, x)``. So ``x1`` is the training
side and ``x2`` the side being predicted. ``binary=True`` differentiates ``f_1 - f_0`` as a single
output (``c = 1``), as the paper does for A-SignGD.

Implementations (all give the same kernel):

- ``"jacobian"``: per-example Jacobians ``[n, c, P]`` of both inputs, contracted. Memory ∝ (n1+n2)·c·P.
- ``"ntk_vp"``: for each cotangent e_{jb}, v = J2ᵀe (a VJP) then J1 v (a JVP); never holds a Jacobian.
  ``chunk`` cotangents at once. SGD kernel only (the sign is not linear).
- ``"streamed"``: Jacobians of at most ``chunk`` x1 examples at a time, then JVPs over all of x2 with
  those (signed) rows as tangents; SignGD contracts x2's signed Jacobians in blocks instead. Memory is
  independent of n1.
- ``"blocked"``: Jacobians of at most ``chunk`` x1 examples at a time, contracted against x2's
  Jacobians computed ``column_chunk`` examples at a time. Memory ``(chunk + column_chunk)·c·P``,
  independent of n1 and n2; each x2 Jacobian is recomputed once per x1 block. Costs about
  ``(1 + 2c)/(3·chunk·c)`` of streamed's forward passes (a Jacobian is one forward and c backward
  passes, a JVP about three forward passes), so it is the fast exact choice for large models.
- ``"structured"``: the dense layers' and embedding tables' terms from their factors, the rest by
  Jacobians (``ntk_lab.structured``); the sign kernels form the dense layers' signed gradients from
  the factors and take the embedding tables' signs on the rows looked up, never a vocabulary-sized
  gradient.
- ``"auto"``: the fastest exact one for the model, kind and sizes, by the rule of
  ``auto_implementation`` (drawn from ``benchmarks/results/entk.json``), chosen at each call.
- ``"sketch"``: an unbiased random-projection estimate, all kinds (``ntk_lab.sketch``: Gaussian or
  CountSketch projections, their variance and tail bounds, ``sketch_error_std``).

``x`` is any pytree of arrays with a leading example axis (a dict batch for the prompted classifier).
The x1 axis is sharded over ``devices`` (default: all JAX devices) with ``jax.sharding``.

Precision policy: a kernel is computed in full float32 whatever the backend's default matmul
precision (a GPU's is TF32, a 10-bit mantissa, which moves a kernel at the 1e-3 level): ``entk_fn``
traces its programs under ``jax.default_matmul_precision("float32")``, so every product of the
model's forward and backward passes is exact float32, and the Gram contractions always run at
``Precision.HIGHEST``. ``precision="tensorfloat32"`` or ``"bfloat16"`` trades that for speed on a
GPU or TPU (their measured error: ``benchmarks/precision.py``); ``"default"`` leaves the backend's
(or the caller's) setting. On CPU every mode computes float32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ntk_lab.jacobians import (
    as_columns,
    binary_margin,
    chunks,
    contract,
    contract_columns,
    margin_fn,
    per_example_jacobian,
    signs,
)
from ntk_lab.pytrees import (
    batch_rows,
    count_params,
    num_examples,
    path_names,
    restrict,
    take_examples,
)
from ntk_lab.sketch import SKETCHES, sketch_kernel
from ntk_lab.structured import structured_kernel

__all__ = ["KINDS", "IMPLEMENTATIONS", "SGD_ONLY", "AUTO", "PRECISIONS", "entk_fn", "matmul_precision", "auto_implementation", "binary_margin",
           "flatten_kernel", "count_params", "num_examples", "path_names", "restrict", "take_examples"]

Params = Any
X = Any
KINDS = ("sgd", "signgd", "asigngd")
IMPLEMENTATIONS = ("jacobian", "ntk_vp", "streamed", "blocked", "structured")  # exact; "sketch" estimates (see above)
SGD_ONLY = ("ntk_vp",)  # the sign is not linear: this computes the sgd kernel only
AUTO = "auto"  # the fastest exact implementation for the model, kind and sizes: see auto_implementation
AUTO_STRUCTURED_PARAMS = 1_000_000  # from this many moving parameters on, structured
AUTO_JACOBIAN_BYTES = 2**30  # sign kernels: jacobian while both sides' Jacobians fit in this many bytes
PRECISIONS = ("float32", "tensorfloat32", "bfloat16", "default")  # the kernel's matmul precision: see above
YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"  # which ops XLA's CPU backend hands to YNNPACK


@functools.cache
def _compiles_with(options: tuple[tuple[str, str], ...]) -> bool:
    try:
        jax.jit(lambda v: v + 1, compiler_options=dict(options))(0.0).block_until_ready()
        return True
    except jax.errors.JaxRuntimeError:  # an option this jaxlib does not know: XLA rejects it when compiling
        return False


def cpu_compiler_options(implementation: str) -> dict[str, str]:
    """The XLA options ``entk_fn`` compiles an implementation with on CPU devices.

    XLA's CPU backend (JAX 0.10) hands dots and reductions to YNNPACK by default. The rule, from
    ``benchmarks/entk.py`` (numbers in docs/performance.md): YNNPACK is slower on the large Gram
    contraction and its reductions slow per-example Jacobians, but it is faster on the structured
    kernel's many small dots. So ``structured`` keeps YNNPACK for dots alone and the other
    implementations use it for nothing. Where this jaxlib lacks the option, nothing is set.
    """
    options = {YNN_FUSIONS: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT" if implementation == "structured" else ""}
    return options if _compiles_with(tuple(options.items())) else {}


def matmul_precision(precision: str) -> contextlib.AbstractContextManager:
    """The context a kernel is traced in: ``jax.default_matmul_precision(precision)``, or nothing
    for ``"default"`` (the backend's or the caller's setting stands)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return contextlib.nullcontext() if precision == "default" else jax.default_matmul_precision(precision)


SPLIT_BYTES = 32 * 2**20  # entk_fn(split=None) splits the jacobian kernel below this much of x2's Jacobian per output


def _jacobian_kernel(g, theta, x1, x2, kind, eps):
    s1, s2 = signs(kind, eps)
    j1 = per_example_jacobian(g, theta, x1)
    j2 = j1 if x2 is None else per_example_jacobian(g, theta, x2)
    return contract(s1(j1), s2(j2))


def _ntk_vp_kernel(g, theta, x1, x2, chunk):
    x2 = x1 if x2 is None else x2
    out2, vjp2 = jax.vjp(lambda t: g(t, x2), theta)
    n2, c = out2.shape
    basis = jnp.eye(n2 * c, dtype=out2.dtype).reshape(n2 * c, n2, c)

    def column(cotangent: jax.Array) -> jax.Array:
        (v,) = vjp2(cotangent)
        return jax.jvp(lambda t: g(t, x1), (theta,), (v,))[1]  # [n1, c]

    cols = jax.lax.map(column, basis, batch_size=chunk)  # [n2*c, n1, c]
    return cols.reshape(n2, c, *cols.shape[1:]).transpose(2, 3, 0, 1)


def _blocked_rows(g, theta, j1, x2, s2, chunk):
    """Rows ``[b, c, n2, c]``: x1's (signed) Jacobian rows ``j1`` (leaves ``[b, c, ...]``) against
    x2's Jacobians, computed, signed by ``s2`` and contracted ``chunk`` x2 examples at a time."""
    out = jax.lax.map(lambda xb: contract(j1, s2(per_example_jacobian(g, theta, xb))), chunks(x2, chunk))
    out = out.transpose(1, 2, 0, 3, 4)  # [b, c, blocks, chunk, c]
    return out.reshape(*out.shape[:2], -1, out.shape[-1])[:, :, : num_examples(x2)]


def _streamed_block(g, theta, x1_block, x2, kind, chunk, eps):
    """Rows ``[b, c, n2, c]`` of the kernel for a block of x1, without x1's other Jacobians."""
    s1, s2 = signs(kind, eps)
    j1 = s1(per_example_jacobian(g, theta, x1_block))  # leaves [b, c, ...]
    if kind == "signgd":  # sign(J2) is not linear in a tangent: contract x2's signed Jacobians by blocks
        return _blocked_rows(g, theta, j1, x2, s2, chunk)
    b, c = j1[0].shape[:2]
    tangents = [v.reshape(b * c, *v.shape[2:]) for v in j1]
    rows = jax.vmap(lambda t: jax.jvp(lambda th: g(th, x2), (theta,), (t,))[1])(tangents)  # [b*c, n2, c]
    return rows.reshape(b, c, *rows.shape[1:])


def _blocked_block(g, theta, x1_block, x2, kind, chunk, eps):
    s1, s2 = signs(kind, eps)
    return _blocked_rows(g, theta, s1(per_example_jacobian(g, theta, x1_block)), x2, s2, chunk)


#: the registry: each implementation's ``(g, θ, x1, x2, settings) -> [n1, c, n2, c]`` on one block of x1
#: (``x2`` None: x1), ``settings`` the options of ``entk_fn``; ``entk_fn`` shards, pads and compiles it
BLOCKS: dict[str, Callable[..., jax.Array]] = {
    "jacobian": lambda g, t, x1, x2, o: _jacobian_kernel(g, t, x1, x2, o["kind"], o["eps"]),
    "ntk_vp": lambda g, t, x1, x2, o: _ntk_vp_kernel(g, t, x1, x2, o["chunk"]),
    "streamed": lambda g, t, x1, x2, o: _streamed_block(g, t, x1, x2, o["kind"], o["chunk"], o["eps"]),
    "blocked": lambda g, t, x1, x2, o: _blocked_block(g, t, x1, x2, o["kind"], o["column_chunk"], o["eps"]),
    "structured": lambda g, t, x1, x2, o: structured_kernel(g, t, x1, x2, o["kind"], o["eps"]),
    "sketch": lambda g, t, x1, x2, o: sketch_kernel(g, t, x1, x2, o["kind"], o["key"], o["dim"], o["sketch"],
                                                    o["block"], o["chunk"], o["eps"]),
}


def auto_implementation(kind: str, params: int, n1: int, n2: int, c: int) -> str:
    """The exact implementation ``implementation="auto"`` runs for ``params`` moving parameters, ``n1``
    x ``n2`` examples and ``c`` outputs.

    From ``AUTO_STRUCTURED_PARAMS`` moving parameters on, ``structured``, which never forms a
    vocabulary-sized gradient and for the SGD kernel no parameter-sized one: fastest from an
    8.5M-parameter MLP to BERT-base on CPU for every kind (``benchmarks/results/entk.json``,
    ``entk_asigngd.json``, ``entk_signgd.json``; on an H200 for roberta-base's SGD kernel), with the
    least memory. Below it, ``jacobian`` (a small model: one Jacobian program beats tracing the dense
    layers' factors), for the sign kernels while both sides' float32 Jacobians, ``(n1 + n2)·c·P``
    numbers, fit in ``AUTO_JACOBIAN_BYTES``, else ``structured``.
    """
    if params >= AUTO_STRUCTURED_PARAMS:
        return "structured"
    if kind == "sgd" or (n1 + n2) * c * params * 4 <= AUTO_JACOBIAN_BYTES:
        return "jacobian"
    return "structured"


def entk_fn(
    f: Callable[[Params, X], jax.Array],
    *,
    kind: str = "sgd",
    implementation: str = "jacobian",
    param_filter: Callable[[tuple[str, ...]], bool] | None = None,
    binary: bool = False,
    chunk: int = 8,
    sign_eps: float = 1e-8,
    column_chunk: int | None = None,
    sketch: str = "gaussian",
    sketch_dim: int = 1024,
    sketch_key: jax.Array | int = 0,
    sketch_block: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    compiler_options: dict[str, str] | None = None,
    split: bool | None = None,
    precision: str = "float32",
) -> Callable[[Params, X, X | None], jax.Array]:
    """``kernel(params, x1, x2=None) -> [n1, c, n2, c]`` for ``f(params, x) -> [n, c]``.

    ``x2=None`` means ``x2 = x1``. ``param_filter(path) -> bool`` selects the parameters that move,
    ``path`` being the tuple of key names (``('encoder', 'layer_0', 'attention', 'self', 'query',
    'bias')``). ``binary`` differentiates ``f_1 - f_0`` (``c = 1``). ``chunk`` bounds how many x1
    examples (streamed, blocked, sketch) or cotangents (ntk_vp) are in flight at once, ``column_chunk``
    (default ``chunk``) how many x2 examples (blocked). The sign kernels use
    ``adam_sign`` with ``sign_eps`` (Adam's ε).

    ``implementation="sketch"`` estimates the kernel with a ``sketch`` ("gaussian" or "sparse")
    projection to ``sketch_dim`` dimensions drawn from ``sketch_key`` (a key or an int seed), generated
    ``sketch_block`` coordinates at a time (default: ``2**24 // sketch_dim`` for gaussian, ``2**20``
    for sparse). The same key gives the same projection, hence consistent kernels across calls.

    ``compiler_options`` are XLA options for the kernel's computation; by default those of
    ``cpu_compiler_options`` on CPU devices and none elsewhere. JAX applies compiler options to a
    top-level jit only, so inside the caller's ``jax.jit`` the kernel runs with the caller's.

    ``split`` (``jacobian`` only) compiles the kernel as two programs instead of one: both sides'
    Jacobians, the side with fewer examples laid out for ``contract_columns``, then their Gram (with
    ``x2=None``: one Jacobian, then ``contract``). On XLA CPU the one program is slower than its parts
    for a small model but avoids writing large Jacobians out for a large one (``benchmarks/staging.py``,
    numbers in docs/performance.md); by default (``None``) it splits when ``n2 · P`` float32 (x2's
    Jacobian per output) is at most ``SPLIT_BYTES``.

    ``precision`` (one of ``PRECISIONS``) is the matmul precision f's passes are traced with: full
    ``float32`` by default whatever the backend's default (the precision policy above).
    """
    matmul_precision(precision)  # checks the name
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if implementation not in (*IMPLEMENTATIONS, AUTO, "sketch"):
        raise ValueError(f"implementation must be one of {(*IMPLEMENTATIONS, AUTO, 'sketch')}, got {implementation!r}")
    if implementation == AUTO:
        options = dict(kind=kind, param_filter=param_filter, binary=binary, chunk=chunk, sign_eps=sign_eps,
                       column_chunk=column_chunk, devices=devices, compiler_options=compiler_options, split=split,
                       precision=precision)
        return _auto_kernel(f, options)
    if sketch not in SKETCHES:
        raise ValueError(f"sketch must be one of {SKETCHES}, got {sketch!r}")
    if sketch_dim < 1:
        raise ValueError(f"sketch_dim must be positive, got {sketch_dim}")
    key = jax.random.PRNGKey(sketch_key) if isinstance(sketch_key, int) else sketch_key
    block_size = sketch_block or (max(1, 2**24 // sketch_dim) if sketch == "gaussian" else 2**20)
    if implementation in SGD_ONLY and kind != "sgd":
        raise ValueError(f"implementation {implementation!r} computes the sgd kernel only (sign is not linear)")
    fn = margin_fn(f) if binary else f
    mesh = Mesh(np.asarray(devices if devices is not None else jax.devices()), ("x1",))
    rows = NamedSharding(mesh, PartitionSpec("x1"))
    replicated = NamedSharding(mesh, PartitionSpec())

    settings = {"kind": kind, "chunk": chunk, "column_chunk": column_chunk or chunk, "eps": sign_eps, "key": key,
                "dim": sketch_dim, "sketch": sketch, "block": block_size}

    def block(params: Params, x1: X, x2: X | None) -> jax.Array:
        g, theta = restrict(fn, params, param_filter)
        return BLOCKS[implementation](g, theta, x1, x2, settings)

    if compiler_options is None:
        cpu = all(d.platform == "cpu" for d in mesh.devices.flat)
        compiler_options = cpu_compiler_options(implementation) if cpu else {}
    symmetric = lambda p, x1: block(p, x1, None)
    s1, s2 = signs(kind, sign_eps)
    jacobians = lambda p, x: per_example_jacobian(*restrict(fn, p, param_filter), x)
    gram = lambda a, b: contract(s1(a), s2(b))

    def programs(options: dict[str, str] | None) -> dict[str, Callable]:
        jit = lambda fn, **kw: jax.jit(fn, compiler_options=options, **kw)
        return {"block": jit(block, out_shardings=rows), "symmetric": jit(symmetric, out_shardings=rows),
                "jacobians": jit(jacobians), "gram": jit(gram, out_shardings=rows),
                # both sides' signed Jacobians in one program, the side with fewer examples laid out
                # for contract_columns (x1's on a tie), then their Gram
                "x1_columns": jit(lambda p, a, b: (as_columns(s1(jacobians(p, a))), s2(jacobians(p, b)))),
                "x2_columns": jit(lambda p, a, b: (s1(jacobians(p, a)), as_columns(s2(jacobians(p, b))))),
                "gram_x1_columns": jit(lambda c1, j2: contract_columns(j2, c1).transpose(2, 3, 0, 1),
                                       out_shardings=rows),
                "gram_x2_columns": jit(lambda j1, c2: contract_columns(j1, c2), out_shardings=rows)}

    mesh_devices = set(mesh.devices.flat)
    top_level = programs(compiler_options)
    # JAX takes compiler options on a top-level jit only: under the caller's jit the caller's compile
    # settles them, so a traced call runs without ours
    nested = programs(None) if compiler_options else top_level

    def run(params: Params, x1: X, x2: X | None) -> jax.Array:
        """Pad x1 to a multiple of the device count, shard it, run, and drop the padding rows."""
        traced = any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves((params, x1, x2)))
        compiled = nested if traced else top_level
        n = num_examples(x1)
        padded = -(-n // mesh.size) * mesh.size
        x1p = jax.device_put(x1 if padded == n else take_examples(x1, batch_rows(n, 0, padded)), rows)
        if traced or any(getattr(v, "sharding", None) is None or v.sharding.device_set != mesh_devices
                         for v in jax.tree_util.tree_leaves(params)):
            params = jax.device_put(params, replicated)  # else jit takes them where they are
        x2r = None if x2 is None and padded == n else jax.device_put(x1 if x2 is None else x2, replicated)
        n2 = num_examples(x1 if x2 is None else x2)
        if implementation == "jacobian" and (
            split if split is not None else n2 * count_params(params, param_filter) * 4 <= SPLIT_BYTES
        ):
            if x2r is None:  # one Jacobian serves both sides
                j1 = compiled["jacobians"](params, x1p)
                return compiled["gram"](j1, j1)[:n]
            side = "x1_columns" if padded <= n2 else "x2_columns"
            return compiled[f"gram_{side}"](*compiled[side](params, x1p, x2r))[:n]
        if x2r is None:
            return compiled["symmetric"](params, x1p)[:n]
        return compiled["block"](params, x1p, x2r)[:n]

    def kernel(params: Params, x1: X, x2: X | None = None) -> jax.Array:
        with matmul_precision(precision):  # traced (hence compiled) under the policy's precision
            if implementation not in ("streamed", "blocked"):
                return run(params, x1, x2)
            n1 = num_examples(x1)
            x2 = x1 if x2 is None else x2
            return jnp.concatenate(
                [run(params, take_examples(x1, np.arange(s, min(s + chunk, n1))), x2) for s in range(0, n1, chunk)]
            )

    return kernel


def _auto_kernel(f: Callable[[Params, X], jax.Array], options: dict[str, Any]) -> Callable[[Params, X, X | None], jax.Array]:
    """``entk_fn(f, implementation=auto_implementation(...), **options)``, chosen at each call from the
    sizes of that call (one compiled kernel per choice); ``kernel.choose(params, x1, x2=None)`` says
    which it runs."""
    built: dict[str, Callable] = {}

    def choose(params: Params, x1: X, x2: X | None = None) -> str:
        fn = margin_fn(f) if options["binary"] else f
        c = jax.eval_shape(fn, params, take_examples(x1, np.arange(1))).shape[-1]
        n1 = num_examples(x1)
        return auto_implementation(options["kind"], count_params(params, options["param_filter"]), n1,
                                   n1 if x2 is None else num_examples(x2), c)

    def kernel(params: Params, x1: X, x2: X | None = None) -> jax.Array:
        name = choose(params, x1, x2)
        if name not in built:
            built[name] = entk_fn(f, implementation=name, **options)
        return built[name](params, x1, x2)

    kernel.choose = choose  # type: ignore[attr-defined]
    return kernel


def flatten_kernel(k: jax.Array) -> jax.Array:
    """``[n1, c, n2, c] -> [n1·c, n2·c]``, rows and columns ordered (example, output)."""
    n1, c1, n2, c2 = k.shape
    return k.reshape(n1 * c1, n2 * c2)
