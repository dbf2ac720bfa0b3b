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
    assert {r["method"] for r in results.as_json()["runs"]} == {"zero-shot", "zero-shot-calibrated", "kernel-sgd"}
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
    ({"lambdas": (-1.0,)}, "--lambdas must be non-negative finite numbers, got -1.0"),
    ({"f0_scales": ()}, "--f0-scales must be positive numbers (inf: no offset), got none"),
    ({"f0_scales": (float("nan"),)}, "--f0-scales must be positive numbers"),
    ({"subsets": ("lora",)}, "unknown subset 'lora'"),
])
def test_config_is_checked_when_made(change, message) -> None:
    with pytest.raises(NtkLabError, match=re.escape(message)):
        CompareConfig(task="sst2", **change)
    config = CompareConfig(task="sst2", seeds=[1, 2])
    assert config.seeds == (1, 2) and config.lrs["sgd"] == (1e-4, 1e-3, 1e-2)
    with pytest.raises(AttributeError):
        config.k = 3  # frozen


def test_the_solver_grid_reaches_the_kernel_predictor(tmp_path) -> None:
    """``lambdas`` and ``f0_scales`` are the grid the kernel methods choose from. With s = 1 and λ -> ∞
    ridge's coefficients vanish, ``α = (K + λ'I)⁻¹ (Y - f0) = O(1/λ')``, so kernel-sgd's test scores
    are the pre-trained outputs ``f0`` and its accuracy is zero-shot's (closed form of the limit)."""
    import numpy as np

    from ntk_lab.compare import parse
    from ntk_lab.protocol import context, encode_seed, kernel_method, prepare, zero_shot

    config, _ = parse(["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--seeds", "13", "--test-cap", "32",
                       "--kernels", "sgd", "--optimizers", "", "--lambdas", "1e9", "--f0-scales", "1"])
    assert (config.lambdas, config.f0_scales) == ((1e9,), (1.0,))
    setup = prepare(config)
    ctx = context(setup, tmp_path)
    data = encode_seed(ctx, setup.splits[0])
    record, arrays = kernel_method(ctx, data, "sgd")
    assert (record["lambda"], record["scale"]) == (1e9, 1.0)
    f0 = data.f0b["test"]
    np.testing.assert_allclose(arrays["test"], f0, rtol=0, atol=1e-6 * np.abs(f0).max())
    assert record["accuracy"] == zero_shot(ctx, data)[0]["accuracy"]


def test_official_asym_solver_uses_the_transposed_kernel(tmp_path) -> None:
    """kernel-asigngd with LM-Kernel-FT's solver: the protocol's record equals select_official on kernels
    computed here directly, K(X_train, x) and K(x, X_train) with the sign on x's side."""
    import numpy as np

    from ntk_lab import solvers
    from ntk_lab.kernels import entk_fn
    from ntk_lab.protocol import context, encode_seed, kernel_method, prepare

    config = CompareConfig(task="sst2", model="tiny", data_dir="sample", seeds=(13,), kernels=("asigngd",),
                           optimizers=(), test_cap=32, asym_solver="official")
    setup = prepare(config)
    ctx = context(setup, tmp_path)
    data = encode_seed(ctx, setup.splits[0])
    record, arrays = kernel_method(ctx, data, "asigngd")
    assert record["solver"] == "asym-official" and record["mix"] in solvers.MIXES
    kernel = entk_fn(setup.f, kind="asigngd", binary=True)
    parts = data.parts
    x_all = {k: np.concatenate([data.x[p][k] for p in ("train", "dev", "test")]) for k in data.x["train"]}
    k = np.asarray(kernel(data.params0, data.x["train"], x_all), np.float64)
    flipped = np.transpose(np.asarray(kernel(data.params0, x_all, data.x["train"]), np.float64), (2, 3, 0, 1))
    assert not np.allclose(k[:, :, parts["train"]], flipped[:, :, parts["train"]], rtol=1e-3)  # asymmetric
    part = lambda name: (k[:, :, parts[name]], flipped[:, :, parts[name]], data.y[name], data.f0b[name])
    chosen = solvers.select_official(*part("train"), *part("dev"))
    assert (chosen.lam, chosen.scale, chosen.fit.mix) == (record["lambda"], record["scale"], record["mix"])
    k_test, kf_test, y_test, f0_test = part("test")
    scores = chosen.fit.decision(k_test, kf_test, f0_test)
    # float32 kernels of two implementations, through the solver: equal to 1e-2 of the scores' range
    np.testing.assert_allclose(arrays["test"], scores, atol=1e-2 * np.abs(scores).max())
    assert abs(record["accuracy"] - np.mean(solvers.predict_labels(scores) == y_test)) <= 1 / 32


def test_ft_together_trains_the_learning_rate_grid_at_once(tmp_path, monkeypatch) -> None:
    """``--ft-together`` reaches ``finetune.train(together=True)`` for the grid (its equality with the
    sequential runs: tests/test_finetune.py); the default trains them one after another."""
    from ntk_lab import finetune
    from ntk_lab.compare import parse
    from ntk_lab.protocol import context, encode_seed, finetune_method, prepare

    config, _ = parse(["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--seeds", "13", "--test-cap", "8",
                       "--optimizers", "sgd", "--ft-together"])
    assert config.ft_together and not parse(["--task", "sst2"])[0].ft_together
    seen = []

    def stop(*args, **kwargs):
        seen.append((kwargs["lrs"], kwargs["together"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "train", stop)
    setup = prepare(config)
    ctx = context(setup, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        finetune_method(ctx, encode_seed(ctx, setup.splits[0]), "sgd")
    assert seen == [((1e-4, 1e-3, 1e-2), True)]


def test_ft_precision_and_scan_layers_reach_fine_tuning_only(tmp_path, monkeypatch) -> None:
    """``--ft-precision bfloat16 --scan-layers``: fine-tuning's steps differentiate a bfloat16, scanned
    variant of the classifier, fine-tuning is measured with the float32 scanned one, and the kernels
    keep the unrolled float32 model (the structured kernels need it); the subset reparameterization
    wraps the variants too. An unknown precision is one line."""
    import jax.numpy as jnp

    from ntk_lab import finetune
    from ntk_lab.compare import parse
    from ntk_lab.protocol import context, encode_seed, finetune_method, prepare
    from ntk_lab.subsets import SubsetClassifier

    with pytest.raises(NtkLabError, match=re.escape("--ft-precision: unknown ['float16']")):
        CompareConfig(task="sst2", ft_precision="float16")
    config, _ = parse(["--task", "sst2", "--model", "tiny", "--data-dir", "sample", "--seeds", "13", "--test-cap", "8",
                       "--optimizers", "sgd", "--ft-precision", "bfloat16", "--scan-layers"])
    setup = prepare(config)
    ctx = context(setup, tmp_path)
    module = lambda f: f.model.module
    assert (module(ctx.step_f).dtype, module(ctx.step_f).scan) == (jnp.bfloat16, True)
    assert (module(ctx.ft_f).dtype, module(ctx.ft_f).scan) == (jnp.float32, True)
    assert ctx.f is setup.f and not module(ctx.f).scan and module(ctx.f).dtype == jnp.float32
    assert ctx.step_f.label_ids is setup.f.label_ids and ctx.step_f.model.params is setup.model.params
    subset = context(setup, tmp_path / "bias", "bitfit")
    assert isinstance(subset.step_f, SubsetClassifier) and module(subset.step_f.f).dtype == jnp.bfloat16
    default = context(prepare(CompareConfig(task="sst2", model="tiny", data_dir="sample", seeds=(13,))), tmp_path / "d")
    assert default.step_f is default.ft_f is default.f  # nothing changes: the compiled programs are shared

    seen = []

    def stop(f, *args, **kwargs):
        seen.append((f, kwargs["step_f"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "train", stop)
    with pytest.raises(KeyboardInterrupt):
        finetune_method(ctx, encode_seed(ctx, setup.splits[0]), "sgd")
    assert seen == [(ctx.ft_f, ctx.step_f)]


def test_run_with_a_prepared_setup_applies_its_own_config(tmp_path, monkeypatch) -> None:
    """``run(config, out, setup)`` reuses the setup's model and splits but runs ``config`` (its
    fine-tuning precision here), and a setup prepared for other data is one line."""
    import dataclasses

    from ntk_lab import protocol

    base = CompareConfig(task="sst2", model="tiny", data_dir="sample", seeds=(13,), kernels=(), optimizers=(), test_cap=8)
    setup = protocol.prepare(base)
    seen = []
    real = protocol.context
    monkeypatch.setattr(protocol, "context", lambda s, *args, **kwargs: seen.append(s.config) or real(s, *args, **kwargs))
    other = dataclasses.replace(base, ft_precision="bfloat16")
    results = protocol.run(other, tmp_path, setup)
    assert seen == [other] and results.config == other and {r["method"] for r in results.runs} == {"zero-shot", "zero-shot-calibrated"}
    with pytest.raises(NtkLabError, match=re.escape("the setup was prepared for other k")):
        protocol.run(dataclasses.replace(base, k=8), tmp_path, setup)


def test_checkpoints_of_one_architecture_share_compiled_programs(tmp_path) -> None:
    """Classifiers compare by architecture and tokenizer (``prompts.program_key``): a second checkpoint
    of the tiny architecture compiles next to nothing (under 10% of the first's XLA compile time), and
    its results equal those of programs built for it alone, so no shared program keeps the first
    checkpoint's parameters."""
    import dataclasses

    import jax
    import numpy as np

    from ntk_lab import protocol
    from ntk_lab.cache import compile_seconds

    config = CompareConfig(task="sst2", model="tiny", data_dir="sample", seeds=(13,), kernels=("sgd",),
                           optimizers=("sgd",), lr_sgd=(1e-2,), steps=4, eval_every=2, test_cap=7)  # shapes of its own:
    setup = protocol.prepare(config)  # no other test's programs in the session's persistent compilation cache
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: p + 0.02 * rng.standard_normal(p.shape).astype(p.dtype), setup.model.params)
    model = dataclasses.replace(setup.model, params=params)
    other = dataclasses.replace(setup, model=model, f=dataclasses.replace(setup.f, model=model))
    assert other.f == setup.f and hash(other.f) == hash(setup.f) and other.f is not setup.f
    assert other.f != dataclasses.replace(setup.f, model=model.variant(scan=True))

    def compiled(out: str, setup: protocol.Setup) -> tuple[dict[str, np.ndarray], float]:
        """The run's test outputs, kernel spectrum and fine-tuning curve, and its XLA compile seconds."""
        with compile_seconds() as seconds:
            results = protocol.run(config, tmp_path / out, setup)
        numbers = {f"{m}/{k}": v for m, arrays in results.seed_outputs[13].items() for k, v in arrays.items()}
        for r in results.runs:
            numbers |= {f"{r['method']}/spectrum": np.array(r.get("spectrum", []))}
            numbers |= {f"{r['method']}/{k}": np.array(v) for k, v in r.get("curve", {}).items() if k != "lr"}
        return numbers, sum(seconds)

    protocol.forget_programs()  # an earlier test in this process may have compiled the tiny model's programs
    first, first_s = compiled("first", setup)
    shared, shared_s = compiled("shared", other)
    assert first_s > 1.0 and shared_s < 0.1 * first_s, (first_s, shared_s)
    protocol.forget_programs()  # as in a new process
    alone, _ = compiled("alone", other)
    assert shared.keys() == alone.keys() and {"kernel-sgd/test", "ft-sgd/train_loss"} <= set(shared)
    for name in shared:
        np.testing.assert_allclose(shared[name], alone[name], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
    # the checkpoints differ, and so do their outputs
    for name in ("kernel-sgd/test", "ft-sgd/test", "ft-sgd/train_loss"):
        assert not np.allclose(shared[name], first[name], rtol=1e-3, atol=1e-4), name


def test_methods_of_equal_classifiers_share_one_compiled_program() -> None:
    """``prompts.batched_outputs(classifier.features, ...)`` (the no-prompt probe's features) compiles
    once per architecture: the bound methods of two checkpoints' ``HeadClassifier`` map to one program,
    which still computes each checkpoint's own features; a scanned variant gets its own program."""
    import dataclasses

    import jax
    import numpy as np

    from ntk_lab import prompts
    from ntk_lab.models import load_masked_lm
    from ntk_lab.prompts import HeadClassifier, batched_outputs, encode
    from ntk_lab.tasks import get_task, load_task_data

    model = load_masked_lm("tiny")
    rng = np.random.default_rng(1)
    other = dataclasses.replace(model, params=jax.tree.map(
        lambda p: p + 0.05 * rng.standard_normal(p.shape).astype(p.dtype), model.params))
    first, second = HeadClassifier(model, 2), HeadClassifier(other, 2)
    assert first.features != second.features  # Python's bound methods compare their owners by identity
    assert prompts._jitted(first.features) is prompts._jitted(second.features)
    assert prompts._jitted(first.features) is not prompts._jitted(HeadClassifier(model.variant(scan=True), 2).features)
    task = get_task("sst2")
    encoded = encode(task, load_task_data(task, "sample")[0][:6], model.tokenizer, 32)
    a = batched_outputs(first.features, model.params, encoded, 4)
    b = batched_outputs(second.features, other.params, encoded, 4)
    alone = np.asarray(jax.jit(second.features)(other.params, {k: encoded[k] for k in prompts.INPUT_KEYS}))
    assert a.shape == (6, model.config.hidden_size) and not np.allclose(a, b, atol=1e-3)
    np.testing.assert_allclose(b, alone, rtol=1e-5, atol=1e-6)
