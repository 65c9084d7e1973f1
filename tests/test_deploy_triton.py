"""Triton model repositories: every zoo model's engines deploy and validate; each kind of broken
repository gets its own error; the CLI's exit codes; serving against a real server where one exists."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlforge.cli import cli
from dlforge.deploy.triton import validate_repository, write_repository
from dlforge.errors import InputError
from tests.helpers import import_or_skip

import_or_skip("tritonclient.grpc.model_config_pb2", "tritonclient is the serve extra")


@pytest.fixture(scope="module")
def zoo_engines(tmp_path_factory):
    """fp32 and INT8 ONNX Runtime engines of every zoo model, trained for one epoch on digits."""
    from dlforge_models import get_entry, list_models

    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint
    from dlforge.train import checkpoint_from_training

    root = tmp_path_factory.mktemp("zoo")
    engines = {}
    for name in list_models():
        data = "keywords" if get_entry(name).modality == "audio" else "digits"
        ckpt = checkpoint_from_training(name, root / name / "checkpoint", data=data, epochs=1, seed=0)
        onnx = onnx_from_checkpoint(ckpt.path, root / name / "onnx")
        for precision in ("fp32", "int8"):
            engines[name, precision] = engine_from_onnx(onnx.path, root / name / precision, precision=precision)
    return engines


def test_every_zoo_model_deploys_to_a_repository_that_validates(zoo_engines, tmp_path):
    repo = tmp_path / "repo"
    written = write_repository([e.path for e in zoo_engines.values()], repo)
    assert len(written) == len(zoo_engines)
    models, problems = validate_repository(repo)
    assert not problems, [str(p) for p in problems]
    assert len(models) == len(zoo_engines)
    for (name, precision), engine in zoo_engines.items():
        folder = repo / f"{name}-ort-{precision}"
        text = (folder / "config.pbtxt").read_text()
        assert 'platform: "onnxruntime_onnx"' in text and "max_batch_size: 64" in text and "dynamic_batching" in text
        assert (folder / "1" / "model.onnx").read_bytes() == engine.payload_path.read_bytes()
        card = engine.card.model
        assert (folder / "labels.txt").is_file() == (card.task == "classification")
        if card.task == "classification":
            assert (folder / "labels.txt").read_text().split() == list(card.labels)
        first = card.inputs[0]
        dims = [d if isinstance(d, int) else -1 for d in first.shape[1:]]
        assert "".join(f"dims: {d}\n" for d in dims) in text.replace("  ", "")


@pytest.fixture
def good(digits_engines, tmp_path):
    """A fresh valid repository of the digits LeNet's fp32 engine, and its model folder."""
    repo = tmp_path / "repo"
    write_repository([digits_engines["fp32"].path], repo, names=["lenet"])
    return repo, repo / "lenet"


def _edit(folder: Path, old: str, new: str) -> None:
    config = folder / "config.pbtxt"
    text = config.read_text()
    assert old in text, text
    config.write_text(text.replace(old, new, 1))


def _edit_card(folder: Path, **sections) -> None:
    card = folder / "dlforge-card.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), **sections}))


def _codes(repo: Path) -> set[str]:
    return {p.code for p in validate_repository(repo)[1]}


BROKEN = {
    "wrong dtype": (lambda f: _edit(f, "data_type: TYPE_FP32", "data_type: TYPE_FP16"), {"wrong-dtype"}),
    "dims disagree": (lambda f: _edit(f, "dims: 8\n  dims: 8", "dims: 9\n  dims: 9"), {"wrong-dims"}),
    "missing version folder": (lambda f: shutil.rmtree(f / "1"), {"missing-version"}),
    "no model file in the version": (lambda f: (f / "1" / "model.onnx").rename(f / "1" / "lenet.onnx"),
                                     {"missing-model-file"}),
    "name differs from directory": (lambda f: _edit(f, 'name: "lenet"', 'name: "lenet2"'), {"name-mismatch"}),
    "not protobuf text": (lambda f: _edit(f, "max_batch_size: 64", "max_batch_size = 64"), {"unparsable-config"}),
    "unknown input": (lambda f: _edit(f, 'name: "input"', 'name: "image"'), {"unknown-input", "missing-input"}),
    "fixed batch served batched": (None, {"batch-not-dynamic"}),
    "dynamic batching without a batch": (
        lambda f: (_edit(f, "max_batch_size: 64\n", ""),
                   _edit(f, "dims: 1\n  dims: 8", "dims: -1\n  dims: 1\n  dims: 8"),
                   _edit(f, "dims: 10", "dims: -1\n  dims: 10")), {"dynamic-batching-without-batch"}),
    "labels do not match the classes": (lambda f: (f / "labels.txt").write_text("0\n1\n2\n"), {"wrong-labels"}),
    "model file replaced": (lambda f: (f / "1" / "model.onnx").write_bytes(b"not the engine"), {"model-changed"}),
    "platform for another backend": (lambda f: _edit(f, 'platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"'),
                                     {"platform-mismatch", "plan-on-cpu"}),
    "no config": (lambda f: (f / "config.pbtxt").unlink(), {"missing-config"}),
    "platform Triton has no backend for": (lambda f: _edit(f, 'platform: "onnxruntime_onnx"', 'platform: "caffe2"'),
                                           {"unknown-platform"}),
    "no card": (lambda f: (f / "dlforge-card.json").unlink(), {"no-card"}),
    "card is not a card": (lambda f: (f / "dlforge-card.json").write_text("[1, 2]"), {"bad-card"}),
    "negative max batch": (lambda f: (_edit(f, "max_batch_size: 64", "max_batch_size: -2"),
                                      _edit(f, "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}", "")),
                           {"bad-max-batch", "wrong-dims"}),  # below 1, Triton reads dims as the full shape
    "engine's smallest batch above 1": (lambda f: _edit_card(f, batch_range=[2, 64]), {"batch-under-profile"}),
    "unknown output": (lambda f: _edit(f, 'name: "logits"', 'name: "scores"'), {"unknown-output", "missing-output"}),
    "label file named but absent": (lambda f: (f / "labels.txt").unlink(), {"missing-labels"}),
    "labels not the card's": (lambda f: (f / "labels.txt").write_text("\n".join(str(9 - i) for i in range(10)) + "\n"),
                              {"wrong-labels"}),
    "card without a model": (lambda f: _edit_card(f, model=None), {"bad-card"}),
    "tensorrt plan on a CPU instance": (None, {"plan-on-cpu"}),
    "batch larger than the profile": (None, {"batch-over-profile"}),
}


def test_every_code_the_validator_can_give_has_a_broken_repository():
    """The codes in dlforge/deploy/triton.py's ``problem(...)`` calls, each produced by a case above."""
    import re

    from dlforge.deploy import triton

    source = Path(triton.__file__).read_text(encoding="utf-8")
    codes = set(re.findall(r'problem\("([a-z-]+)"', source))
    for kind in re.findall(r'problem\(f"([a-z]+)-\{kind\}"', source):
        codes |= {f"{kind}-input", f"{kind}-output"}
    assert len(codes) == 24
    assert codes == set().union(*(expected for _, expected in BROKEN.values()))


@pytest.mark.parametrize("case", [c for c, (edit, _) in BROKEN.items() if edit is not None])
def test_each_broken_repository_gets_its_own_error(good, case):
    repo, folder = good
    assert _codes(repo) == set()
    edit, expected = BROKEN[case]
    edit(folder)
    assert _codes(repo) == expected


def test_a_fixed_batch_engine_gets_max_batch_size_0_and_refuses_batching(digits_onnx, tmp_path):
    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint

    static_onnx = onnx_from_checkpoint(digits_onnx.card.parent["path"], tmp_path / "onnx", dynamic_batch=False)
    engine = engine_from_onnx(static_onnx.path, tmp_path / "engine", precision="fp32")
    repo = tmp_path / "repo"
    write_repository([engine.path], repo, names=["static"])
    text = (repo / "static" / "config.pbtxt").read_text()
    assert "max_batch_size" not in text and "dynamic_batching" not in text  # 0 is protobuf's default
    assert "dims: 1\n  dims: 1\n  dims: 8\n  dims: 8" in text
    assert _codes(repo) == set()
    with pytest.raises(InputError, match="fixed at 1"):
        write_repository([engine.path], tmp_path / "other", max_batch_size=8)
    _edit(repo / "static", "dims: 1\n  dims: 1", "dims: 1")
    _edit(repo / "static", "dims: 1\n  dims: 10", "dims: 10")
    config = repo / "static" / "config.pbtxt"
    config.write_text("max_batch_size: 8\n" + config.read_text())
    assert _codes(repo) == BROKEN["fixed batch served batched"][1]


def test_batch_range_of_the_engine_bounds_max_batch_size(digits_onnx, tmp_path):
    from dlforge.build import engine_from_onnx

    engine = engine_from_onnx(digits_onnx.path, tmp_path / "engine", precision="fp32", max_batch=8)
    with pytest.raises(InputError, match="exceeds the engine's largest batch 8"):
        write_repository([engine.path], tmp_path / "repo", max_batch_size=16)
    assert not (tmp_path / "repo").exists()
    write_repository([engine.path], tmp_path / "repo", names=["m"])
    assert "max_batch_size: 8\n" in (tmp_path / "repo" / "m" / "config.pbtxt").read_text()
    _edit(tmp_path / "repo" / "m", "max_batch_size: 8", "max_batch_size: 16")
    assert _codes(tmp_path / "repo") == BROKEN["batch larger than the profile"][1]


def test_a_tensorrt_plan_on_a_cpu_instance_is_refused(good):
    repo, folder = good
    card = json.loads((folder / "dlforge-card.json").read_text())
    card["sections"] = {**card.get("sections", {}), "backend": "tensorrt"}
    card["backend"] = "tensorrt"
    (folder / "dlforge-card.json").write_text(json.dumps(card))
    _edit(folder, 'platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"')
    _edit(folder, 'default_model_filename: "model.onnx"', 'default_model_filename: "model.plan"')
    (folder / "1" / "model.onnx").rename(folder / "1" / "model.plan")
    assert _codes(repo) == BROKEN["tensorrt plan on a CPU instance"][1]


def test_cli_deploy_and_validate(digits_engines, tmp_path):
    repo = tmp_path / "repo"
    runner = CliRunner()
    result = runner.invoke(cli, ["deploy", "triton", str(digits_engines["fp32"].path), str(digits_engines["int8"].path),
                                 "-o", str(repo)])
    assert result.exit_code == 0, result.output
    assert "lenet-ort-fp32: onnxruntime_onnx, max_batch_size 64" in result.stdout
    result = runner.invoke(cli, ["deploy", "validate", str(repo)])
    assert result.exit_code == 0 and result.stdout.count(": ok") == 2
    again = runner.invoke(cli, ["deploy", "triton", str(digits_engines["fp32"].path), "-o", str(repo)])
    assert again.exit_code == 2 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert (repo / "lenet-ort-int8").is_dir()  # nothing was replaced
    _edit(repo / "lenet-ort-int8", "data_type: TYPE_FP32", "data_type: TYPE_INT64")
    result = runner.invoke(cli, ["deploy", "validate", str(repo)])
    assert result.exit_code == 1 and "lenet-ort-int8: input 'input' is TYPE_INT64" in result.stdout
    assert "lenet-ort-fp32: ok" in result.stdout
    bad = runner.invoke(cli, ["deploy", "triton", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "r2").exists()
    twice = runner.invoke(cli, ["deploy", "triton", str(digits_engines["fp32"].path),
                                str(digits_engines["fp32"].path), "-o", str(tmp_path / "r3")])
    assert twice.exit_code == 2 and "give --names" in twice.stderr and not (tmp_path / "r3").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = runner.invoke(cli, ["deploy", "validate", str(empty)])
    assert nothing.exit_code == 2 and "nothing to validate" in nothing.stderr


def _triton_server() -> str | None:
    """A tritonserver binary with the ONNX Runtime backend, or None."""
    binary = os.environ.get("TRITONSERVER") or shutil.which("tritonserver")
    if not binary:
        return None
    backends = Path(os.environ.get("TRITON_BACKEND_DIR", "/opt/tritonserver/backends"))
    return binary if (backends / "onnxruntime").is_dir() else None


@pytest.mark.skipif(_triton_server() is None, reason="no tritonserver with the onnxruntime backend on this machine "
                    "(set TRITONSERVER and TRITON_BACKEND_DIR; nvidia-pytriton's bundled server has only the Python "
                    "backend, which cannot load an onnxruntime_onnx model)")
def test_a_real_triton_server_answers_like_the_runtime(digits_engines, tmp_path):
    import tritonclient.grpc as grpcclient

    from dlforge.data import load_dataset
    from dlforge.runtime import open_session

    repo = tmp_path / "repo"
    write_repository([digits_engines["fp32"].path], repo, names=["lenet"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([_triton_server(), f"--model-repository={repo}", f"--grpc-port={port}",
                               "--allow-http=false", "--allow-metrics=false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready("lenet"):
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        x = load_dataset("digits").x_test[:32].astype(np.float32)
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        served = client.infer("lenet", [inp]).as_numpy("logits")
        np.testing.assert_allclose(served, open_session(digits_engines["fp32"].path).run(x)[0], atol=1e-5)
    finally:
        server.terminate()
        server.wait(30)


def test_force_replaces_only_a_dlforge_repository_and_max_batch_size_0_turns_batching_off(digits_engines, tmp_path):
    repo = tmp_path / "repo"
    write_repository([digits_engines["fp32"].path], repo, names=["m"])
    assert oct(repo.stat().st_mode & 0o777) != oct(0o700)  # readable by a server run as another user
    write_repository([digits_engines["int8"].path], repo, names=["n"], force=True, max_batch_size=0)
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == ["n"]
    text = (repo / "n" / "config.pbtxt").read_text()
    assert "max_batch_size" not in text and "dynamic_batching" not in text and "dims: -1\n  dims: 1" in text
    assert _codes(repo) == set()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not written by dlforge"):
        write_repository([digits_engines["fp32"].path], other, force=True)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="--max-batch-size must be >= 0"):
        write_repository([digits_engines["fp32"].path], tmp_path / "neg", max_batch_size=-1)
    assert not (tmp_path / "neg").exists()
