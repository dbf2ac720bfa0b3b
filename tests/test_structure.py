"""The package's structure: no import cycle between its modules (counting imports inside functions),
and ``ntk_lab.models`` imports nothing from the layers above it (tasks, prompts, the offline builders);
the GPU scripts name only what exists."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file (package ``__init__`` files left out)."""
    graph: dict[str, set[str]] = {}
    for package in ("ntk_lab", "icl_bayes"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "__init__.py":
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("ntk_lab", "icl_bayes"):
                    found.add(node.module)
                    found.update(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    found.update(a.name for a in node.names if a.name.split(".")[0] in ("ntk_lab", "icl_bayes"))
            graph[name] = found
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_cycle() -> None:
    graph = imports()
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path[path.index(dep):], dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_models_import_nothing_from_the_layers_above() -> None:
    graph = imports()
    for module, deps in graph.items():
        if module.startswith("ntk_lab.models."):
            above = {d for d in deps if not d.startswith("ntk_lab.models.") and d not in ("ntk_lab.errors", "ntk_lab.cache")}
            assert not above, f"{module} imports {sorted(above)}"


def test_the_engine_is_layered() -> None:
    """kernels (registry and runner) on top of structured and sketch, on top of jacobians (primitives)."""
    from ntk_lab.kernels import BLOCKS, IMPLEMENTATIONS

    graph = imports()
    assert graph["ntk_lab.jacobians"] <= {"ntk_lab.pytrees"}
    for module in ("ntk_lab.structured", "ntk_lab.sketch"):
        assert {d.rsplit(".", 1)[0] if d not in graph else d for d in graph[module]} <= {"ntk_lab.jacobians",
                                                                                            "ntk_lab.pytrees"}, module
    assert set(BLOCKS) == {*IMPLEMENTATIONS, "sketch"}


def test_icl_bayes_is_layered() -> None:
    """The formulas (bma, attention) know nothing of the model; each prior uses them; the library
    (evaluate) is apart from its command lines (simulate, pretrain)."""
    graph = imports()
    modules = lambda name: {d if d in graph else d.rsplit(".", 1)[0] for d in graph[name]}
    assert modules("icl_bayes.bma") == set()
    assert modules("icl_bayes.attention") <= {"icl_bayes.bma"}
    assert modules("icl_bayes.model") <= {"icl_bayes.bma", "icl_bayes.attention", "icl_bayes.rates", "ntk_lab.errors"}
    assert modules("icl_bayes.rates") == set()
    assert not modules("icl_bayes.evaluate") & {"icl_bayes.simulate", "icl_bayes.pretrain"}


def test_device_scripts_parse_and_name_what_exists() -> None:
    """The GPU scripts run where nobody watches them: each parses (``bash -n``), and every benchmark or
    script path and every ``python -m`` module it names exists here."""
    import importlib.util
    import re
    import subprocess

    scripts = sorted((ROOT / "scripts").glob("device_*.sh"))
    assert len(scripts) >= 5
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0, script.name
        text = script.read_text()
        paths = set(re.findall(r"\b((?:benchmarks|scripts)/[\w.]+\.(?:py|sh))\b", text))
        missing = [p for p in paths if not (ROOT / p).exists()]
        modules = set(re.findall(r"(?:-m |module=\")((?:ntk_lab|icl_bayes|experiments)\.[\w.]+)", text))
        missing += [m for m in modules if importlib.util.find_spec(m) is None]
        assert not missing, f"{script.name} names {missing}"
