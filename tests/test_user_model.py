"""Your own PyTorch model in: dlforge.checkpoint_from_module and ``dlforge import``, then export.

The model is defined here only (a small residual CNN, not in the zoo), trained for a few epochs on
digits with a plain PyTorch loop, on inputs normalized with (x - 0.3) / 0.3: the checkpoint and its
ONNX export must take pixels and compute what the model computes on normalized pixels.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import dlforge
from dlforge.artifact import open_artifact, sha256_file, training_data
from dlforge.errors import ArtifactError, InputError
from dlforge.export import onnx_from_checkpoint
from dlforge.train import load_checkpoint
from tests.cli.tamper import tampered_copy
from tests.cli.test_cli_errors import assert_clean_failure
from tests.helpers import dlforge as run_cli
from tests.test_card_validation import _set

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = 0.3, 0.3


class ResidualCNN(nn.Module):
    """Conv stem, one residual block with batch norm, global average pooling, linear head."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        h = torch.relu(self.bn(self.stem(x)))
        h = torch.relu(h + self.conv2(torch.relu(self.conv1(h))))
        return self.head(h.mean((2, 3)))


def normalized(x):
    return (x - MEAN) / STD


@pytest.fixture(scope="module")
def model(digits):
    """The residual CNN trained on normalized digits for a few epochs (a plain PyTorch loop), in eval mode."""
    torch.manual_seed(0)
    net = ResidualCNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    for _ in range(6):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(normalized(x[batch])), y[batch]).backward()
            optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def api_checkpoint(model, tmp_path_factory):
    return dlforge.checkpoint_from_module(model, tmp_path_factory.mktemp("api") / "ckpt", data="digits",
                                          normalization=(MEAN, STD))


def reference_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(normalized(torch.from_numpy(x))).numpy()


def onnx_logits(onnx_dir: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(Path(onnx_dir) / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def dlforge_cmd(*args, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m dlforge ARGS`` in a subprocess, with ``pythonpath`` (the user's code) importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (pythonpath, ROOT) if p)}
    return subprocess.run([sys.executable, "-m", "dlforge", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def as_result(proc: subprocess.CompletedProcess):
    """A subprocess's outcome in the shape ``assert_clean_failure`` reads."""
    return types.SimpleNamespace(exit_code=proc.returncode, stderr=proc.stderr, output=proc.stdout + proc.stderr)


run = run_cli


def test_import_is_light_and_the_api_lazy():
    code = ("import sys, dlforge; light = 'torch' not in sys.modules; f = dlforge.checkpoint_from_module; "
            "print(light, 'torch' in sys.modules, f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.split() == ["True", "True", "dlforge.train.user_model"]


def test_api_checkpoint_records_route_normalization_data_and_accuracy(api_checkpoint, model, digits):
    card = api_checkpoint.card
    assert card.payload == "program.pt2"
    assert card.sections["architecture"] == {"route": "program", "dynamic_batch": True}
    assert card.sections["normalization"] == {"mean": [MEAN], "std": [STD]}
    assert "(x - mean) / std" in card.model.preprocessing
    assert card.model.inputs[0].shape == ("batch", 1, 8, 8) and card.model.labels == digits.labels
    assert training_data(api_checkpoint) == ("digits", None)
    expected = float((reference_logits(model, digits.x_test).argmax(1) == digits.y_test).mean())
    assert expected > 0.8 and card.sections["metrics"]["test_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert open_artifact(api_checkpoint.path).card.sha256 == sha256_file(api_checkpoint.payload_path)


def test_checkpoint_takes_pixels_and_gives_input_gradients(api_checkpoint, model, digits):
    net, _ = load_checkpoint(api_checkpoint.path)
    net = net.eval().to("cpu")
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(digits.x_test[:16]).requires_grad_(True)
    logits = net(x)
    np.testing.assert_allclose(logits.detach().numpy(), reference_logits(model, digits.x_test[:16]), atol=1e-5)
    nn.functional.cross_entropy(logits, torch.from_numpy(digits.y_test[:16])).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    from dlforge.train.checkpoint import attack_model

    source = attack_model(api_checkpoint)
    np.testing.assert_allclose(source.predict(digits.x_test[:600]), reference_logits(model, digits.x_test[:600]),
                               atol=1e-5)
    assert np.abs(source.input_gradients(digits.x_test[:8], digits.y_test[:8])).sum() > 0


def test_api_export_takes_pixels(api_checkpoint, model, digits, tmp_path):
    onnx_dir = onnx_from_checkpoint(api_checkpoint.path, tmp_path / "onnx").path
    x = digits.x_test[:7]
    np.testing.assert_allclose(onnx_logits(onnx_dir, x), reference_logits(model, x), atol=1e-4)


def test_cli_import_of_a_pt2_then_export(model, digits, tmp_path):
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, tmp_path / "net.pt2")
    proc = dlforge_cmd("import", tmp_path / "net.pt2", "--data", "digits", "--normalize", f"{MEAN}/{STD}",
                       "--name", "rescnn", "-o", tmp_path / "ckpt", "--json")
    assert proc.returncode == 0, proc.stderr
    card = json.loads(proc.stdout)
    assert card["architecture"]["route"] == "program" and card["model"]["name"] == "rescnn"
    assert card["params"]["data"] == "digits" and card["metrics"]["test_accuracy"] > 0.8

    result = run("export", tmp_path / "ckpt", "-o", tmp_path / "onnx")
    assert result.exit_code == 0, result.output
    x = digits.x_test[:5]
    np.testing.assert_allclose(onnx_logits(tmp_path / "onnx", x), reference_logits(model, x), atol=1e-4)


def test_cli_import_of_a_factory_then_export(model, digits, tmp_path, monkeypatch):
    (tmp_path / "usernets.py").write_text("import torch\nfrom torch import nn\n\n\n"
                                          + textwrap.dedent(inspect.getsource(ResidualCNN))
                                          + "\n\ndef build(width=16):\n    return ResidualCNN(width)\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    proc = dlforge_cmd("import", "usernets:build", "--kwargs", '{"width": 16}', "--weights", tmp_path / "w.safetensors",
                       "--data", "digits", "--normalize", f"{MEAN}/{STD}", "-o", tmp_path / "ckpt", "--json",
                       pythonpath=tmp_path)
    assert proc.returncode == 0, proc.stderr
    card = json.loads(proc.stdout)
    assert card["architecture"] == {"route": "factory", "factory": "usernets:build", "kwargs": {"width": 16}}
    assert card["payload"] == "model.safetensors" and card["metrics"]["test_accuracy"] > 0.8

    monkeypatch.syspath_prepend(str(tmp_path))
    result = run("export", tmp_path / "ckpt", "-o", tmp_path / "onnx")
    assert result.exit_code == 0, result.output
    x = digits.x_test[:5]
    np.testing.assert_allclose(onnx_logits(tmp_path / "onnx", x), reference_logits(model, x), atol=1e-4)


def test_fixed_batch_fallback(tmp_path):
    class PerSample(nn.Module):  # a Python loop over the batch: torch.export cannot make it dynamic
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 3)

        def forward(self, x):
            return torch.stack([self.fc(x[i].flatten()) for i in range(x.shape[0])])

    net = PerSample().eval()
    ckpt = dlforge.checkpoint_from_module(net, tmp_path / "ckpt", input_shape=(1, 8, 8), labels=["a", "b", "c"])
    architecture = ckpt.card.sections["architecture"]
    assert architecture["dynamic_batch"] is False and architecture["batch"] == 1
    assert "Constraints violated" in architecture["dynamic_batch_error"]
    loaded, _ = load_checkpoint(ckpt.path)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded(x), net(x))
    with pytest.raises(InputError, match="fixed batch of 1 .*--static-batch"):
        onnx_from_checkpoint(ckpt.path, tmp_path / "onnx")


# -- normalization in zoo training ----------------------------------------------------------------
def test_zoo_training_with_normalize_auto_trains_behind_the_layer(digits, tmp_path):
    from dlforge.train import checkpoint_from_training
    from dlforge.train.normalization import Normalize

    ckpt = checkpoint_from_training("mlp", tmp_path / "ckpt", epochs=2, normalize="auto", progress=False)
    section = ckpt.card.sections["normalization"]
    assert section["mean"] == [pytest.approx(float(digits.x_train.mean()), abs=1e-5)]
    assert section["std"] == [pytest.approx(float(digits.x_train.std()), abs=1e-5)]
    assert ckpt.card.params["normalize"] == "auto"
    net, _ = load_checkpoint(ckpt.path)
    assert isinstance(net[0], Normalize)
    with torch.inference_mode():
        accuracy = float((net(torch.from_numpy(digits.x_test)).argmax(1).numpy() == digits.y_test).mean())
    assert accuracy == pytest.approx(ckpt.card.sections["metrics"]["test_accuracy"], abs=1e-6)
    plain, _ = load_checkpoint(checkpoint_from_training("mlp", tmp_path / "plain", epochs=2, progress=False).path)
    first = next(iter(plain.state_dict()))  # same seed, same data: only the layer in front differs
    assert not torch.equal(net[1].state_dict()[first], plain.state_dict()[first])


@pytest.mark.parametrize("args, message", [
    (["mlp", "--normalize", "0.5"], "--normalize expects none, auto or MEAN/STD"),
    (["mlp", "--normalize", "0.5,0.4/0.2,0.1,0.3"], "2 means but 3 standard deviations"),
    (["mlp", "--normalize", "0.5/0"], "a standard deviation must be positive"),
    (["mlp", "--normalize", "0.5,0.5,0.5/0.2"], "the model's inputs have 1 channels"),
    (["dbn", "--normalize", "auto"], "dbn pretrains on pixels in [0, 1]"),
])
def test_train_refuses_a_bad_normalize(args, message, tmp_path):
    assert_clean_failure(run("train", *args, "--epochs", "1", "-o", tmp_path / "out"), tmp_path, message)


# -- malicious archives --------------------------------------------------------------------------
class Payload:
    """Unpickling this creates the marker file: what a hostile archive would do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _pickled(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    return buffer.getvalue()


def _sample_inputs(name: str, data: bytes, marker: Path) -> bytes:
    """Every archive holds a pickle of sample inputs, which torch.export.load unpickles without
    weights_only when the safe load fails."""
    return _pickled(marker) if name.startswith("data/sample_inputs/") else data


def _pickled_weight(name: str, data: bytes, marker: Path) -> bytes:
    if name.endswith("_weights_config.json"):
        config = json.loads(data)
        config["config"][next(iter(config["config"]))]["use_pickle"] = True
        return json.dumps(config).encode()
    return _pickled(marker) if name == "data/weights/weight_0" else data


def _guard_code(name: str, data: bytes, marker: Path) -> bytes:
    """guards_code is Python that ExportedProgram.module() passes to exec."""
    if name.startswith("models/"):
        program = json.loads(data)
        program["guards_code"] = [f"open({str(marker)!r}, 'w') is None"]
        return json.dumps(program).encode()
    return data


def hostile_copy(src: Path, dst: Path, change, marker: Path) -> Path:
    with zipfile.ZipFile(src) as given, zipfile.ZipFile(dst, "w") as out:
        for info in given.infolist():
            out.writestr(info.filename, change(info.filename.split("/", 1)[1], given.read(info), marker))
    return dst


@pytest.fixture(scope="module")
def small_pt2(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "small.pt2"
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("b")},)), path)
    return path


@pytest.mark.parametrize("change", [_sample_inputs, _pickled_weight, _guard_code])
def test_hostile_pt2_is_refused_without_running_it(change, small_pt2, tmp_path):
    marker = tmp_path / "marker"
    hostile = hostile_copy(small_pt2, tmp_path / "hostile.pt2", change, marker)
    try:  # the payload is live: torch.export.load on the file itself, and running what it loads, runs it
        torch.export.load(hostile).module()(torch.zeros(2, 1, 8, 8))
    except Exception:
        pass
    assert marker.exists()
    marker.unlink()

    result = as_result(dlforge_cmd("import", hostile, "--input-shape", "1,8,8", "--num-classes", "10",
                                   "-o", tmp_path / "out"))
    assert_clean_failure(result, tmp_path, "is refused")
    assert not marker.exists() and not (tmp_path / "out").exists()


def _first(node, key):
    """The first dict in a JSON tree that holds ``key``."""
    if isinstance(node, dict):
        if key in node:
            return node
        node = list(node.values())
    if isinstance(node, list):
        return next((found for child in node if (found := _first(child, key)) is not None), None)
    return None


def _edit_program(edit):
    def change(name: str, data: bytes, marker: Path) -> bytes:
        if not name.startswith("models/"):
            return data
        program = json.loads(data)
        edit(program)
        return json.dumps(program).encode()
    return change


@pytest.mark.parametrize("change, message", [
    (_edit_program(lambda p: _first(p, "expr_str").update(expr_str="__import__('os').getcwd()")),
     "names '__import__' (sympy would evaluate it)"),
    (_edit_program(lambda p: _first(p, "target").update(target="torch.os.system")),
     "the program calls 'torch.os.system'"),
    (_edit_program(lambda p: p["graph_module"]["graph"]["inputs"][-1]["as_tensor"].update(name="x=print()")),
     "is not a plain name"),
    (_edit_program(lambda p: p["graph_module"]["graph"]["custom_obj_values"].update(obj={"class_fqn": "a.B"})),
     "custom (TorchBind) objects"),
    (lambda name, data, marker: data, None),  # unchanged, plus an AOTInductor entry (below)
])
def test_pt2_vetting_refuses_code_in_any_form(change, message, small_pt2, tmp_path):
    from dlforge.train.pt2_archive import vetted_entries

    hostile = hostile_copy(small_pt2, tmp_path / "hostile.pt2", change, tmp_path / "marker")
    if message is None:  # an AOTInductor package: a shared library torch would load
        with zipfile.ZipFile(hostile, "a") as archive:
            archive.writestr("small/data/aotinductor/model/model.so", b"\x7fELF")
        message = "AOTInductor-compiled code"
    with pytest.raises(InputError, match=re.escape(message)):
        vetted_entries(hostile.read_bytes(), where=str(hostile))


def test_pt2_vetting_refuses_an_entry_named_twice(small_pt2, tmp_path):
    from dlforge.train.pt2_archive import vetted_entries

    hostile = tmp_path / "twice.pt2"
    hostile.write_bytes(small_pt2.read_bytes())
    with warnings.catch_warnings(), zipfile.ZipFile(hostile, "a") as archive:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name: the point of the test
        archive.writestr("small/models/model.json", b"{}")
    with pytest.raises(InputError, match="names an entry twice"):
        vetted_entries(hostile.read_bytes(), where=str(hostile))


def test_hostile_program_in_a_checkpoint_is_refused_at_load(api_checkpoint, small_pt2, tmp_path):
    marker = tmp_path / "marker"
    hostile = hostile_copy(small_pt2, tmp_path / "hostile.pt2", _sample_inputs, marker)
    # whoever can swap the file can rewrite the card's sha256 too
    ckpt = tampered_copy(api_checkpoint.path, tmp_path / "ckpt", payload=hostile.read_bytes())
    with pytest.raises(ArtifactError, match="sample_inputs/model.pt is a pickle that calls"):
        load_checkpoint(ckpt)
    assert_clean_failure(run("export", ckpt, "-o", tmp_path / "out" / "onnx"), tmp_path / "out", "is refused")
    assert not marker.exists()


@pytest.mark.parametrize("field, value, message", [
    ("architecture.route", "pickle", "architecture.route is 'pickle'; expected one of program, factory"),
    ("architecture.dynamic_batch", "yes", "architecture.dynamic_batch must be true or false"),
    ("architecture", {"route": "factory", "factory": "os.system('x')"}, "expected package.module:callable"),
    ("normalization.std", [0.0], "normalization must be {mean, std}"),
    ("normalization", {"mean": [0.1, 0.2], "std": [0.3, 0.3]}, "but the input has 1 channels"),
])
def test_a_card_with_a_bad_architecture_or_normalization_is_refused(api_checkpoint, tmp_path, field, value, message):
    bad = tampered_copy(api_checkpoint.path, tmp_path / "in" / "ckpt", card=_set(field, value))
    assert_clean_failure(run("export", bad, "-o", tmp_path / "run" / "out"), tmp_path / "run", message)


# -- bad inputs: one line, exit code 2, nothing written ------------------------------------------
@pytest.fixture()
def factory_dir(tmp_path, monkeypatch):
    (tmp_path / "tinynets.py").write_text(textwrap.dedent("""
        from torch import nn

        NOT_CALLABLE = 3

        def build(classes=10):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, classes))

        def broken():
            raise ValueError("no such width")
        """))
    save_file({k: v.contiguous() for k, v in nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).state_dict().items()},
              str(tmp_path / "w.safetensors"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["nothere.pt2", "--num-classes", "10", "--input-shape", "1,8,8"], "nothere.pt2 does not exist"),
    (["{text}", "--num-classes", "10", "--input-shape", "1,8,8"], "is not a .pt2 archive"),
    (["nosuchmodule:build", "--weights", "{dir}/w.safetensors", "--num-classes", "10", "--input-shape", "1,8,8"],
     "cannot import module 'nosuchmodule'"),
    (["tinynets:NOT_CALLABLE", "--weights", "{dir}/w.safetensors", "--num-classes", "10", "--input-shape", "1,8,8"],
     "tinynets:NOT_CALLABLE is not callable (it is a int)"),
    (["tinynets:broken", "--weights", "{dir}/w.safetensors", "--num-classes", "10", "--input-shape", "1,8,8"],
     "raised ValueError: no such width"),
    (["tinynets:build", "--kwargs", '{"classes": 3}', "--weights", "{dir}/w.safetensors", "--num-classes", "3",
      "--input-shape", "1,8,8"], "'1.weight' has shape [10, 64], the model's is [3, 64]"),
    (["tinynets:build", "--weights", "{dir}/nothere.safetensors", "--num-classes", "10"],
     "nothere.safetensors does not exist"),
    (["tinynets:build", "--num-classes", "10", "--input-shape", "1,8,8"], "give its weights with --weights"),
    (["tinynets:build", "--weights", "{dir}/w.safetensors", "--num-classes", "10", "--input-shape", "1,28,28"],
     "does not run on a zero batch of shape [2, 1, 28, 28]"),
    (["tinynets:build", "--weights", "{dir}/w.safetensors", "--num-classes", "5", "--input-shape", "1,8,8"],
     "must output logits [2, 5]"),
    (["tinynets:build", "--weights", "{dir}/w.safetensors", "--input-shape", "1,8,8"], "give the classes"),
    (["tinynets:build", "--weights", "{dir}/w.safetensors", "--num-classes", "10", "--input-shape", "1,8,8",
      "--normalize", "0.5"], "--normalize expects none or MEAN/STD"),
    (["tinynets:build", "--weights", "{dir}/w.safetensors", "--num-classes", "10", "--input-shape", "1,8,8",
      "--kwargs", "{width"], "--kwargs is not JSON"),
    (["tinynets:build", "--weights", "{dir}/w.safetensors", "--data", "digits", "--input-shape", "1,28,28"],
     "--data digits has images (1, 8, 8), but --input-shape is (1, 28, 28)"),
    (["model.txt", "--num-classes", "10"], "a .pt2 file (torch.export.save) nor package.module:factory"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, factory_dir):
    (factory_dir / "text.pt2").write_text("not a zip")
    args = [a.replace("{dir}", str(factory_dir)).replace("{text}", str(factory_dir / "text.pt2")) for a in args]
    assert_clean_failure(run("import", *args, "-o", factory_dir / "out"), factory_dir, message)
    assert not (factory_dir / "out").exists()
