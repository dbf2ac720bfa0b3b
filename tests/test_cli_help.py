"""Every command line's ``--help``: named as it is typed, defaults shown, outputs, cache and resuming
described (the compare CLI also: every subset kind, the offline sample, which model needs the network)."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from ntk_lab.subsets import SUBSET_KINDS

ROOT = Path(__file__).resolve().parent.parent


def _help(capsys, run) -> str:
    with pytest.raises(SystemExit) as e:
        run()
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("module", ["ntk_lab.compare", "ntk_lab.pretrain", "icl_bayes.simulate", "icl_bayes.pretrain"])
def test_each_main_cli_names_itself_and_shows_defaults_and_outputs(module, capsys) -> None:
    main = __import__(module, fromlist=["main"]).main
    text = _help(capsys, lambda: main(["--help"]))
    assert text.startswith(f"usage: python -m {module} ")
    assert "outputs, in --out:" in text
    # every option with a value by default shows it: count the options, then the defaults shown
    options = set(re.findall(r"^  (--[a-z-]+) [A-Z_]+", text, flags=re.M)) - {"--task", "--corpus", "--out"}
    unset = {"--data-dir", "--beta", "--subsets", "--init-from", "--hidden-size", "--layers", "--heads",
             "--intermediate-size", "--max-seconds"} if module == "ntk_lab.pretrain" else {"--data-dir", "--beta", "--subsets"}
    assert text.count("(default: ") >= len(options - unset) >= 8


def test_compare_help_lists_subsets_outputs_cache_and_resuming(capsys) -> None:
    from ntk_lab.compare import main

    text = " ".join(_help(capsys, lambda: main(["--help"])).split())  # one line, single spaces
    assert "(default: roberta-base)" in text and "a hub id (needs the network)" in text
    assert "'sample': a synthetic SST-2" in text
    for kind in SUBSET_KINDS:
        assert f"{kind}: " in text, kind
    for output in ("results.json", "results.csv", "accuracy.png", "scatter.png", "curves.png", "subsets.png", "state/"):
        assert output in text, output
    assert "$NTK_LAB_CACHE/kernels" in text and "resuming: run the same command again" in text


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "experiments").glob("*.py")
                                          if "report.cli(" in p.read_text()))
def test_experiment_help(script, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    monkeypatch.delitem(sys.modules, f"experiments.{script[:-3]}", raising=False)  # run it fresh, as python -m does
    text = _help(capsys, lambda: runpy.run_module(f"experiments.{script[:-3]}", run_name="__main__"))
    assert text.startswith(f"usage: python -m experiments.{script[:-3]} ") and "(default: " in text
    assert f"OUT/{script[:-3]}.json" in " ".join(text.split())


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if "parser(" in p.read_text()))
def test_benchmark_help(script, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    text = _help(capsys, lambda: runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__"))
    assert text.startswith(f"usage: python benchmarks/{script} ")


@pytest.mark.parametrize("script, module", [("ntk-compare", "ntk_lab.compare"), ("ntk-pretrain", "ntk_lab.pretrain"),
                                            ("icl-simulate", "icl_bayes.simulate"), ("icl-pretrain", "icl_bayes.pretrain")])
def test_console_scripts_are_installed_and_run(script, module) -> None:
    path = Path(sys.executable).parent / script
    assert path.exists(), f"{script} is not installed next to {sys.executable}: pip install -e ."
    done = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: python -m {module} ")


def test_the_code_passes_ruff() -> None:
    """pyproject's ruff rules (pyflakes, bugbear, isort, pyupgrade) over the packages, experiments, benchmarks and tests."""
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "ntk_lab", "icl_bayes", "experiments",
                           "benchmarks", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]


def test_every_cli_keeps_compiled_programs_unless_the_user_chose_a_folder(tmp_path, monkeypatch) -> None:
    """``cli_main`` turns JAX's persistent compilation cache on in ``$NTK_LAB_CACHE/xla``; a folder the
    user chose (``JAX_COMPILATION_CACHE_DIR``, as this test session does) is kept."""
    import jax

    from ntk_lab.cli import cli_main

    seen = []
    run = cli_main(lambda argv: seen.append(jax.config.jax_compilation_cache_dir))
    chosen = jax.config.jax_compilation_cache_dir
    run(None)
    assert seen[-1] == chosen and chosen == os.environ["JAX_COMPILATION_CACHE_DIR"]
    monkeypatch.setenv("NTK_LAB_CACHE", str(tmp_path))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        run(None)
        assert seen[-1] == str(tmp_path / "xla") and (tmp_path / "xla").is_dir()
    finally:
        jax.config.update("jax_compilation_cache_dir", chosen)


def test_compile_seconds_counts_each_compilation_once_and_restores_the_logger() -> None:
    """``cache.compile_seconds`` records one positive entry per program XLA compiles in the block
    (a function of a new shape compiles; a call of a compiled one does not) and leaves JAX's
    dispatch logger as it found it."""
    import logging

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ntk_lab.cache import compile_seconds

    logger = logging.getLogger("jax._src.dispatch")
    before = (logger.level, logger.propagate, list(logger.handlers))
    f = jax.jit(lambda a: jnp.tanh(a) @ a.T + 17.0)  # a program of its own, absent from the persistent cache
    a, b, c = (jax.device_put(np.ones(shape, np.float32)) for shape in ((3, 5), (4, 7), (6, 2)))
    f(a).block_until_ready()
    with compile_seconds() as seconds:
        f(a).block_until_ready()
    assert seconds == []
    with compile_seconds() as seconds:
        f(b).block_until_ready()
        f(b).block_until_ready()
        f(c).block_until_ready()
    assert len(seconds) == 2 and all(s > 0 for s in seconds), seconds
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
