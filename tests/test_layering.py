"""dlforge's layers import only downward: no module imports one of a higher layer, function-local imports included.

    core -> lower (data, runtime, precision, backends) -> attacks and the ONNX->torch converter -> stages (train, export, build,
    bench) -> adversarial (audit, probes, detectors, defences) -> workflows (pipeline, poison, drift, sweep,
    deploy, inspect, doctor) -> cli

A module of a layer may import its own layer and any below. Every module of the package must be placed in
a layer (a new module is placed here, deliberately); registries' built-in module lists obey the same rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {  # module prefix -> layer; the longest matching prefix decides
    "dlforge": 0, "dlforge.errors": 0, "dlforge.registry": 0, "dlforge.options": 0, "dlforge.reporting": 0,
    "dlforge.artifact": 0, "dlforge.env": 0, "dlforge.card_validation": 0, "dlforge.onnx_info": 0,
    "dlforge.onnx_external": 0, "dlforge.kinds": 0, "dlforge.progress": 0,
    "dlforge.data": 1, "dlforge.runtime": 1, "dlforge.precision": 1, "dlforge.backends": 1,
    "dlforge.onnx_torch": 2, "dlforge.adversarial.attacks": 2,
    "dlforge.train": 3, "dlforge.export": 3, "dlforge.build": 3, "dlforge.bench": 3,
    "dlforge.adversarial": 4,
    "dlforge.pipeline": 5, "dlforge.drift": 5, "dlforge.sweep": 5, "dlforge.deploy": 5, "dlforge.inspect": 5,
    "dlforge.doctor": 5, "dlforge.adversarial.poisoning.run": 5,
    "dlforge.cli": 6, "dlforge.__main__": 6, "dlforge.launcher": 6,
}
NAMES = ["core", "lower", "attacks/converter", "stages", "adversarial", "workflows", "cli"]


def layer(module: str) -> int | None:
    """The layer of ``module``; ``dlforge`` itself matches only exactly (its submodules need a prefix of their own)."""
    found = [p for p in LAYERS if module == p or (p != "dlforge" and module.startswith(p + "."))]
    return LAYERS[max(found, key=len)] if found else None


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "dlforge").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every ``dlforge`` module imported anywhere in ``path`` (top level or inside functions), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append(("dlforge.<relative import>", node.lineno))  # absolute imports only: relative ones hide layers
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, node.lineno)]
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names
                      if f"{node.module}.{a.name}" in MODULES]  # "from dlforge.x import submodule"
    return [(m, line) for m, line in found if m == "dlforge" or m.startswith("dlforge.")]


def _modules_by_name(path: Path) -> list[tuple[str, int]]:
    """Module names written as strings (outside docstrings): what ``Registry(...)``, ``import_package_modules``,
    ``importlib.import_module`` or a lazy attribute table imports by name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(c.value, c.lineno) for c in ast.walk(tree) if isinstance(c, ast.Constant) and id(c) not in docstrings
            and isinstance(c.value, str) and c.value.startswith("dlforge.") and c.value.split(":")[0] in MODULES]


# Deliberate exceptions, each with its reason.
ALLOWED = {
    ("dlforge", "dlforge.train.user_model"):
        "dlforge.checkpoint_from_module, the package's lazy attribute: resolved on first use, never on import",
}


MODULES = _modules()


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer(m) is None] == []


def test_no_relative_imports():
    relative = [f"{p.relative_to(ROOT)}:{line}" for p in MODULES.values() for t, line in _imports(p)
                if t == "dlforge.<relative import>"]
    assert relative == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_only_downward(module):
    mine = layer(module)
    path = MODULES[module]
    upward = [f"{path.relative_to(ROOT)}:{line} imports {target} ({NAMES[layer(target)]} above {NAMES[mine]})"
              for target, line in _imports(path) + _modules_by_name(path)
              if layer(target) is not None and layer(target) > mine and (module, target) not in ALLOWED]
    assert upward == []


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a function-local import of the audit from the build stage is found."""
    bad = tmp_path / "mod.py"
    bad.write_text("def f():\n    from dlforge.adversarial.audit import run_audit\n    return run_audit\n")
    assert [layer(t) for t, _ in _imports(bad)] == [4] and layer("dlforge.build.mixed") == 3
    assert layer("dlforge.adversarial.attacks.pgd") == 2 and layer("dlforge.adversarial.poisoning.run") == 5
    assert layer("dlforge.adversarial.probes") == 4 and layer("dlforge.nothing_here") is None
    lazy = tmp_path / "lazy.py"  # an import by name is an import
    lazy.write_text('"""dlforge.cli in a docstring is not one."""\nimport importlib\nimportlib.import_module("dlforge.cli")\n')
    assert [t for t, _ in _modules_by_name(lazy)] == ["dlforge.cli"]
