"""dlforge as users install it: the wheel, installed non-editable into fresh virtual environments.

One wheel is built from a copy of the source tree. Two environments are made from it, outside the
repo so the source tree cannot shadow the install:

* toolkit: ``pip install -c constraints.txt 'dlforge-*.whl[toolkit]'`` (checked first to resolve to
  the CPU build of torch), which must run ``dlforge pipeline`` end to end;
* base: the wheel with no extras (numpy + onnxruntime; pytest to run tests), which must run the
  runtime's Session tests and import no torch, onnx or click.

About two to three minutes on two cores, mostly the pipeline (its audit) and installing torch. Deselect
with ``-m "not install"``; missing prerequisites skip with the reason, or fail under CI=true.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import HANDOFF_ENV, skip_unless_ci, write_handoff

pytestmark = [pytest.mark.install, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
# Left out of the copy the wheel is built from: what .gitignore ignores, and the git directory. Top-level
# names only for the first set (dlforge/build/ is a package, /build/ is setuptools' scratch directory).
NOT_SOURCE_TOP = {".git", ".venv", "build", "dist", "runs"}
NOT_SOURCE_ANYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "*.partial")
# Imports the base install must not have (torch, onnx and click above all).
TOOLKIT_MODULES = ("torch", "onnx", "onnxscript", "click", "sklearn", "scipy", "tqdm", "matplotlib", "safetensors")
BIN = "Scripts" if os.name == "nt" else "bin"


def _env(**extra: str) -> dict[str, str]:
    """This environment without what would put the source tree (or another env) on the path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", HANDOFF_ENV)}
    env.update(extra)
    return env


def _run(cmd: list, *, cwd: Path, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"`{' '.join(map(str, cmd))}` exited {proc.returncode} in {cwd}\n"
                                  f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def _python(venv: Path) -> Path:
    return venv / BIN / ("python.exe" if os.name == "nt" else "python")


def _outside_repo(path: Path) -> Path:
    assert ROOT not in path.resolve().parents, f"{path} is inside the repo; it must not be (pytest --basetemp?)"
    return path


def _new_venv(root: Path) -> Path:
    """A fresh venv at ``root``; its python."""
    _run([sys.executable, "-m", "venv", root], cwd=root.parent, timeout=300)
    return _python(root)


def _install(python: Path, requirement: str) -> None:
    """``pip install -c constraints.txt requirement`` (not editable: a wheel) into python's venv."""
    _run([python, "-m", "pip", "install", "--no-compile", "-c", CONSTRAINTS, requirement], cwd=python.parent,
         timeout=900)


def _in_venv(python: Path, code: str, cwd: Path, **env: str) -> dict:
    """Run ``code`` (which prints one JSON document) with the venv's python in ``cwd``."""
    return json.loads(_run([python, "-c", code], cwd=cwd, timeout=300, env=_env(**env)).stdout)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (with build isolation, as `pip install .` does) from a copy of the source tree."""
    if importlib.util.find_spec("ensurepip") is None:
        skip_unless_ci("needs the venv module with ensurepip (Debian/Ubuntu: apt install python3-venv)")
    if importlib.util.find_spec("pip") is None:
        skip_unless_ci(f"needs pip in {sys.executable} to build the wheel")
    root = _outside_repo(tmp_path_factory.mktemp("wheel"))
    src = root / "src"
    shutil.copytree(ROOT, src, ignore=lambda d, names: NOT_SOURCE_ANYWHERE(d, names)
                    | (NOT_SOURCE_TOP & set(names) if Path(d) == ROOT else set()))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", root / "dist", src], cwd=root, timeout=600)
    (built,) = (root / "dist").glob("dlforge-*.whl")
    return built


@pytest.fixture(scope="session")
def toolkit_python(wheel, tmp_path_factory) -> Path:
    """python of a fresh venv with ``dlforge[toolkit]`` from the wheel, torch being the CPU build."""
    root = _outside_repo(tmp_path_factory.mktemp("venv-toolkit"))
    requirement = f"{wheel}[toolkit]"
    python = _new_venv(root / "venv")
    # Resolve first, installing nothing: a CUDA torch is gigabytes that must not be downloaded.
    report = root / "resolution.json"
    _run([python, "-m", "pip", "install", "--dry-run", "--quiet", "--report", report, "-c", CONSTRAINTS,
          requirement], cwd=root, timeout=600)
    resolved = {i["metadata"]["name"].lower(): i for i in json.loads(report.read_text())["install"]}
    torch = resolved["torch"]
    nvidia = sorted(n for n in resolved if n.startswith("nvidia-") or n == "triton")
    if not torch["metadata"]["version"].endswith("+cpu") or nvidia:
        skip_unless_ci(f"pip would install torch {torch['metadata']['version']} from "
                       f"{torch['download_info']['url']} with {', '.join(nvidia) or 'no CUDA libraries'}: not the "
                       "CPU build; put the CPU wheel where pip finds it (find-links) or use the CPU index")
    _install(python, requirement)
    installed = _in_venv(python, "import json, importlib.metadata as m; print(json.dumps("
                                 "{d.metadata['Name'].lower(): d.version for d in m.distributions()}))", root)
    assert installed["torch"].endswith("+cpu"), installed["torch"]
    assert not [n for n in installed if n.startswith("nvidia-")], installed
    return python


@pytest.fixture(scope="session")
def base_python(wheel, tmp_path_factory) -> Path:
    """python of a fresh venv with the wheel and no extra but ``test`` (pytest)."""
    python = _new_venv(_outside_repo(tmp_path_factory.mktemp("venv-base")) / "venv")
    _install(python, f"{wheel}[test]")
    return python


@pytest.fixture(scope="session")
def handoff(digits_onnx, digits_engines, tmp_path_factory) -> Path:
    """What the base environment cannot make itself: the digits artifacts and dataset (see conftest)."""
    return write_handoff(tmp_path_factory.mktemp("handoff") / "h", digits_onnx, digits_engines)


def _source_modules() -> set[str]:
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dlforge").rglob("*.py")}
    modules |= {"dlforge_models/" + p.relative_to(ROOT / "models").as_posix() for p in (ROOT / "models").rglob("*.py")}
    return {m for m in modules if "__pycache__" not in m}


def test_wheel_ships_every_module_of_the_source_tree(wheel):
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.endswith(".py")}
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert shipped == _source_modules()
    assert "License-Expression: Apache-2.0" in metadata


def test_toolkit_wheel_imports_every_module(toolkit_python, tmp_path):
    """Every module imports from the installed wheel; only the TensorRT ones may lack their extra."""
    code = (
        "import importlib, json, pkgutil, dlforge, dlforge_models\n"
        "failed = {}\n"
        "for pkg in (dlforge, dlforge_models):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if m.name.endswith('.__main__'):\n"
        "            continue  # runs the CLI\n"
        "        try:\n"
        "            importlib.import_module(m.name)\n"
        "        except ImportError as exc:\n"
        "            if (exc.name or '').split('.')[0] not in ('tensorrt', 'cuda'):\n"
        "                failed[m.name] = repr(exc)\n"
        "print(json.dumps({'file': dlforge.__file__, 'models': dlforge_models.__file__, 'failed': failed}))\n"
    )
    out = _in_venv(toolkit_python, code, _outside_repo(tmp_path))
    venv = toolkit_python.parent.parent
    assert Path(out["file"]).is_relative_to(venv) and Path(out["models"]).is_relative_to(venv), out
    assert out["failed"] == {}


def test_toolkit_wheel_runs_the_pipeline_outside_the_repo(toolkit_python, tmp_path):
    cwd = _outside_repo(tmp_path / "elsewhere")
    cwd.mkdir()
    dlforge = toolkit_python.parent / "dlforge"
    # 3 epochs instead of the model's 60 on digits: this proves the install, not the training.
    proc = _run([dlforge, "pipeline", "lenet", "--data", "digits", "-o", "run", "--epochs", "3"], cwd=cwd,
                timeout=1200, env=_env(DLFORGE_HOME=str(tmp_path / "home")))
    cards = {}
    for stage, kind in (("checkpoint", "checkpoint"), ("onnx", "onnx"), ("engine-ort-fp32", "engine"),
                        ("engine-ort-int8", "engine"), ("bench", "bench"), ("audit", "audit"), ("drift", "drift")):
        card = cwd / "run" / stage / "card.json"
        assert card.is_file(), f"the pipeline wrote no {card}"
        cards[stage] = json.loads(card.read_text())
        assert cards[stage]["kind"] == kind
    assert (cwd / "run" / "audit" / "report.html").is_file()
    _check_drift(proc.stdout, cwd / "run", cards)


def _check_drift(stdout: str, run: Path, cards: dict) -> None:
    """The pipeline ends with the drift table, and its columns are the stages' own figures."""
    assert "drift per hop" in stdout and stdout.index("drift per hop") > stdout.index("audit"), stdout[-3000:]
    hops = {h["hop"]: h for h in json.loads((run / "drift" / "drift.json").read_text())["hops"]}
    assert list(hops) == ["pytorch", "onnx", "ort fp32", "ort int8"]
    for hop in hops:
        assert hop in stdout.split("drift per hop")[1]
    fp32, int8 = cards["engine-ort-fp32"]["evaluation"], cards["engine-ort-int8"]["evaluation"]
    assert abs(hops["pytorch"]["accuracy"] - cards["checkpoint"]["metrics"]["test_accuracy"]) < 1e-6
    assert hops["onnx"]["accuracy"] == fp32["parent_accuracy"] == int8["parent_accuracy"]
    assert hops["ort fp32"]["accuracy"] == fp32["accuracy"] and hops["ort int8"]["accuracy"] == int8["accuracy"]
    assert abs((1 - hops["ort fp32"]["top1_disagreement"]) - fp32["top1_agreement"]) < 1e-9
    audit = json.loads((run / "audit" / "audit.json").read_text())
    for hop, stage in (("ort fp32", "engine-ort-fp32"), ("ort int8", "engine-ort-int8")):
        rows = [r for r in audit["rows"] if r["attack"] == "pgd" and r["eps"] == 0.1
                and r["route"].startswith("white-box (engine)") and Path(r["path"]).name == stage]
        assert len(rows) == 1, [(r["route"], r["path"]) for r in audit["rows"] if r["attack"] == "pgd"]
        assert hops[hop]["robust_accuracy"] == rows[0]["robust_accuracy"], (hop, rows[0])


def test_base_install_has_no_toolkit(base_python, tmp_path):
    code = (
        "import importlib.util, json\n"
        f"print(json.dumps([m for m in {TOOLKIT_MODULES!r} if importlib.util.find_spec(m) is not None]))\n"
    )
    assert _in_venv(base_python, code, _outside_repo(tmp_path)) == []


def test_base_install_command_says_what_to_install(base_python, tmp_path):
    """The console script ships with the base install; without the toolkit it explains itself in one line."""
    proc = subprocess.run([str(base_python.parent / "dlforge"), "models"], cwd=_outside_repo(tmp_path), env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "pip install 'dlforge[toolkit]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_base_runtime_runs_and_imports_no_toolkit(base_python, handoff, tmp_path):
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "import dlforge.runtime\n"
        "from dlforge.runtime import open_session\n"
        "x = np.zeros((3, 1, 8, 8), np.float32)\n"
        "shapes = []\n"
        f"for source in ({str(handoff / 'engine-int8')!r}, {str(handoff / 'onnx' / 'model.onnx')!r}):\n"
        "    with open_session(source) as s:\n"
        "        shapes.append(list(s.predict(x).shape))\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {TOOLKIT_MODULES!r})\n"
        "print(json.dumps({'file': dlforge.runtime.__file__, 'shapes': shapes, 'loaded': loaded}))\n"
    )
    out = _in_venv(base_python, code, _outside_repo(tmp_path))
    assert Path(out["file"]).is_relative_to(base_python.parent.parent), out
    assert out["shapes"] == [[3, 10], [3, 10]] and out["loaded"] == [], out


def test_base_install_passes_the_session_contract(base_python, handoff, tmp_path):
    """tests/runtime/test_session_contract.py, run by the base environment on the handed-over artifacts."""
    cwd = _outside_repo(tmp_path / "suite")
    for rel in ("pyproject.toml", "tests/__init__.py", "tests/conftest.py", "tests/helpers.py",
                "tests/runtime/__init__.py", "tests/runtime/test_session_contract.py"):
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, cwd / rel)  # pyproject.toml: only for its [tool.pytest.ini_options]
    junit = tmp_path / "junit.xml"
    env = _env(**{HANDOFF_ENV: str(handoff), "DLFORGE_HOME": str(tmp_path / "home")})
    _run([base_python, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}",
          "tests/runtime/test_session_contract.py"], cwd=cwd, timeout=600, env=env)
    cases = ET.parse(junit).getroot().iter("testcase")
    outcome = {c.get("name"): next((e.tag for e in c if e.tag in ("failure", "error", "skipped")), "passed")
               for c in cases}
    ran = [name for name, result in outcome.items() if result == "passed"]
    assert len(ran) >= 10 and all("[ort" in name for name in ran), outcome
    assert all(result == "passed" or "tensorrt" in name for name, result in outcome.items()), outcome

