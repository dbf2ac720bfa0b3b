"""Kernel blocks on disk: resume gives the identical kernel, NaN stops with the examples named, a damaged
tile is recomputed, and runs sharing a cache wait for each other's tiles."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_lab.errors import NtkLabError
from ntk_lab.kernel_store import compute_kernel, kernel_key, write_tile
from ntk_lab.kernels import entk_fn


def f(params, x):
    return jnp.tanh(x @ params["w"]) @ params["v"]


PARAMS = {"w": jax.random.normal(jax.random.PRNGKey(0), (3, 16)), "v": jax.random.normal(jax.random.PRNGKey(1), (16, 2))}
X1 = jax.random.normal(jax.random.PRNGKey(2), (10, 3))
X2 = jax.random.normal(jax.random.PRNGKey(3), (4, 3))


def test_interrupted_run_resumes_to_the_identical_kernel(tmp_path) -> None:
    kernel = entk_fn(f)
    whole = np.asarray(kernel(PARAMS, X1, X2))
    calls = []

    def flaky(params, x1, x2):
        calls.append(len(x1))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return kernel(params, x1, x2)

    with pytest.raises(KeyboardInterrupt):
        compute_kernel(flaky, PARAMS, X1, X2, tmp_path, block=3)
    assert len(list(tmp_path.glob("rows_*.npy"))) == 2 and not list(tmp_path.glob(".*"))
    calls.clear()
    resumed = compute_kernel(flaky, PARAMS, X1, X2, tmp_path, block=3)
    assert calls == [3, 3]  # only the two missing blocks, the ragged last one padded to the block's shape
    np.testing.assert_array_equal(resumed, compute_kernel(kernel, PARAMS, X1, X2, tmp_path / "fresh", block=3))
    np.testing.assert_allclose(resumed, whole, rtol=0, atol=1e-5 * np.abs(whole).max())  # float32 blocks vs whole


def test_row_and_column_tiles_assemble_the_kernel_and_name_nan_columns(tmp_path) -> None:
    """10 x 4 examples in tiles of 4 x 3: every tile is computed at that one shape (one compilation)."""
    kernel = entk_fn(f)
    shapes = []
    counted = lambda p, a, b: shapes.append((len(a), len(b))) or kernel(p, a, b)
    tiled = compute_kernel(counted, PARAMS, X1, X2, tmp_path / "tiles", block=4, column_block=3)
    assert len(list((tmp_path / "tiles").glob("rows_*_cols_*.npy"))) == 3 * 2 and set(shapes) == {(4, 3)}
    np.testing.assert_allclose(tiled, kernel(PARAMS, X1, X2), rtol=1e-5, atol=1e-5)
    bad = X2.at[3, 1].set(jnp.inf)
    with pytest.raises(NtkLabError, match=r"against x2 examples \[3\]"):
        compute_kernel(kernel, PARAMS, X1, bad, tmp_path / "bad", block=4, column_block=3)


def test_column_width_pads_narrow_tiles_to_a_wider_compiled_shape(tmp_path) -> None:
    """``column_width`` runs a 4-column kernel at the 7-column tile shape of a wider one (the repeated
    columns dropped), alone or in column tiles: the same kernel, one program for both."""
    kernel = entk_fn(f)
    shapes = []
    counted = lambda p, a, b: shapes.append((len(a), len(b))) or kernel(p, a, b)
    expected = np.asarray(kernel(PARAMS, X1, X2))
    for folder, tiles in (("whole", None), ("tiles", 3)):
        shapes.clear()
        padded = compute_kernel(counted, PARAMS, X1, X2, tmp_path / folder, block=5, column_block=tiles, column_width=7)
        assert set(shapes) == {(5, 7)} and padded.shape == expected.shape, (folder, shapes)
        np.testing.assert_allclose(padded, expected, rtol=1e-5, atol=1e-5)


def test_nan_block_names_the_examples(tmp_path) -> None:
    bad = X1.at[4, 0].set(jnp.nan)
    with pytest.raises(NtkLabError, match=r"NaN/Inf at x1 examples \[4\] against x2 examples \[0, 1, 2, 3\]"):
        compute_kernel(entk_fn(f), PARAMS, bad, X2, tmp_path, block=3)
    assert sorted(p.name for p in tmp_path.glob("rows_*.npy")) == ["rows_0000000_0000003.npy"]
    assert not list(tmp_path.glob("*.lock"))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_tile_is_named_and_recomputed(tmp_path, capsys, damage) -> None:
    kernel = entk_fn(f)
    first = compute_kernel(kernel, PARAMS, X1, X2, tmp_path, block=4)
    tile = tmp_path / "rows_0000004_0000008.npy"
    data = tile.read_bytes()
    if damage == "truncate":
        tile.write_bytes(data[: len(data) // 2])
    else:  # same size, header kept, values replaced: np.load alone would accept it
        tile.write_bytes(data[:128] + np.random.default_rng(0).bytes(len(data) - 128))
    calls = []
    again = compute_kernel(lambda p, a, b: calls.append(len(a)) or kernel(p, a, b), PARAMS, X1, X2, tmp_path, block=4)
    err = capsys.readouterr().err
    assert f"{tile} does not match its checksum" in err and "recomputing it" in err
    assert calls == [4]  # that tile only
    np.testing.assert_array_equal(again, first)


def _hold_claim(path, seconds: float) -> subprocess.Popen:
    """Another live process, named in a claim on ``path``'s tile."""
    holder = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
    (path.parent / (path.name + ".lock")).write_text(f"{socket.gethostname()} {holder.pid}\n")
    return holder


def test_a_run_waits_for_a_tile_another_run_is_computing(tmp_path, capsys) -> None:
    kernel = entk_fn(f)
    whole = compute_kernel(kernel, PARAMS, X1, X2, tmp_path / "reference", block=4)
    tile = tmp_path / "rows_0000004_0000008.npy"
    holder = _hold_claim(tile, 60)

    def the_other_run() -> None:  # finishes its tile after a second and releases its claim
        time.sleep(1.0)
        write_tile(tile, whole[4:8])
        (tmp_path / (tile.name + ".lock")).unlink()

    other = threading.Thread(target=the_other_run)
    other.start()
    calls = []
    try:
        got = compute_kernel(lambda p, a, b: calls.append(len(a)) or kernel(p, a, b), PARAMS, X1, X2, tmp_path, block=4)
    finally:
        other.join()
        holder.kill()
        holder.wait()
    assert sorted(calls) == [4, 4]  # rows 0-4 and 8-10 (padded) here; rows 4-8 came from the other run
    assert "waiting for 1 tile(s) another run is computing" in capsys.readouterr().err
    np.testing.assert_array_equal(got, whole)


def test_a_claim_whose_process_died_is_taken_over(tmp_path) -> None:
    tile = tmp_path / "rows_0000000_0000004.npy"
    holder = _hold_claim(tile, 0)
    holder.wait()
    calls = []
    kernel = entk_fn(f)
    compute_kernel(lambda p, a, b: calls.append(len(a)) or kernel(p, a, b), PARAMS, X1, X2, tmp_path, block=4)
    assert sorted(calls) == [4, 4, 4] and not list(tmp_path.glob("*.lock"))


def test_key_depends_on_model_data_kind_and_subset() -> None:
    base = dict(model="tiny", kind="sgd", subset="full", x1=X1, x2=X2)
    keys = {kernel_key(**base), kernel_key(**{**base, "kind": "asigngd"}), kernel_key(**{**base, "subset": "bitfit"}),
            kernel_key(**{**base, "model": "roberta-base"}), kernel_key(**{**base, "x1": X1 + 1})}
    assert len(keys) == 5 and kernel_key(**base) == kernel_key(**base)


def test_four_host_devices_give_the_single_device_kernel(tmp_path) -> None:
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from ntk_lab.kernels import entk_fn
        assert len(jax.devices()) == 4, jax.devices()
        params = {"w": jax.random.normal(jax.random.PRNGKey(0), (3, 16)), "v": jax.random.normal(jax.random.PRNGKey(1), (16, 2))}
        f = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
        x1 = jax.random.normal(jax.random.PRNGKey(2), (10, 3))
        x2 = jax.random.normal(jax.random.PRNGKey(3), (5, 3))
        with jax.default_matmul_precision("highest"):
            for kind, impl in [("sgd", "jacobian"), ("sgd", "ntk_vp"), ("asigngd", "streamed"), ("signgd", "jacobian")]:
                many = entk_fn(f, kind=kind, implementation=impl, chunk=3)
                one = entk_fn(f, kind=kind, implementation=impl, chunk=3, devices=jax.devices()[:1])
                for a, b in ((x1, x2), (x2, x1)):  # jacobian: x2's Jacobian as columns, then x1's
                    k4, k1 = many(params, a, b), one(params, a, b)
                    assert len(k4.sharding.device_set) == 4 or impl == "streamed", k4.sharding
                    np.testing.assert_allclose(np.asarray(k4), np.asarray(k1), rtol=1e-6, atol=1e-6)
                np.testing.assert_allclose(np.asarray(many(params, x1)), np.asarray(one(params, x1)), rtol=1e-6, atol=1e-6)
        print("ok")
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
