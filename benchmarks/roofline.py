"""The two ceilings a float32 contraction on this machine runs under, both measured in the calling
run: the matmul roofline (GFLOP/s of a large square matmul) and the memory bandwidth (GB/s of one
pass over an array far larger than the caches). A contraction that reads ``B`` bytes and does ``F``
FLOPs cannot beat ``min(roofline, F / B · bandwidth)`` (the roofline model)."""

from __future__ import annotations

from bench_common import first_and_best


def matmul_roofline(n: int = 2048, repeats: int = 10) -> float:
    """float32 GFLOP/s of an n x n matmul, best of at least ``repeats`` calls (``first_and_best``)."""
    import jax

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    mm = jax.jit(lambda x, y: x @ y)
    _, best, _ = first_and_best(lambda: mm(a, a).block_until_ready(), least=repeats)
    return 2 * n**3 / best / 1e9


def memory_bandwidth(gib: float = 1.0, repeats: int = 10) -> float:
    """GB/s (1e9 bytes) of summing a float32 array of ``gib`` GiB: one read pass, best of at
    least ``repeats`` calls."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones(int(gib * 2**30) // 4, jnp.float32)
    total = jax.jit(jnp.sum)
    _, best, _ = first_and_best(lambda: total(a).block_until_ready(), least=repeats)
    return a.nbytes / best / 1e9


def gram_intensity(m1: int, m2: int) -> float:
    """FLOP per byte of the Gram ``[m1, P] x [P, m2]`` in float32 with each operand read once:
    ``2·m1·m2·P / (4·(m1 + m2)·P)``."""
    return 2 * m1 * m2 / (4 * (m1 + m2))


def bound(intensity: float, roofline: float, bandwidth: float) -> float:
    """The roofline model's ceiling in GFLOP/s: ``min(roofline, intensity · bandwidth)``."""
    return min(roofline, intensity * bandwidth)
