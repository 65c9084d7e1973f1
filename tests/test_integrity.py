"""Integrity: lineage verified by hash, payloads confined to the artifact, external data hashed and
confined, --force replacing only a dlforge artifact (never an input), atomic replacement, engine caches."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlforge.artifact import (ArtifactWriter, Card, ModelInfo, TensorSpec, exchange, open_artifact, sha256_file,
                              source_checkpoint)
from dlforge.errors import ArtifactError, InputError
from dlforge.runtime import open_deployed


@pytest.fixture()
def run_copy(digits_lenet, digits_onnx, digits_engines, tmp_path):
    """A private copy of checkpoint -> onnx -> engines whose cards point at the copy (safe to tamper with)."""
    root = tmp_path / "run"
    mapping = {digits_lenet.path: root / "checkpoint", digits_onnx.path: root / "onnx",
               digits_engines["fp32"].path: root / "engine-fp32", digits_engines["int8"].path: root / "engine-int8"}
    for src, dst in mapping.items():
        shutil.copytree(src, dst)
        card = json.loads((dst / "card.json").read_text())
        if card.get("parent"):
            old = Path(card["parent"]["path"]).resolve()
            card["parent"]["path"] = str(next(d for s, d in mapping.items() if s.resolve() == old).resolve())
        (dst / "card.json").write_text(json.dumps(card))
    return root


def _retrain_in_place(checkpoint: Path) -> None:
    """What a different model trained at the same path looks like: other weights, a card that matches them."""
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    card = json.loads((checkpoint / "card.json").read_text())
    card["sha256"] = sha256_file(weights)
    (checkpoint / "card.json").write_text(json.dumps(card))


def test_lineage_is_verified_against_the_recorded_sha256(run_copy):
    engine = open_artifact(run_copy / "engine-fp32")
    assert source_checkpoint(engine).path == run_copy / "checkpoint"
    _retrain_in_place(run_copy / "checkpoint")
    open_artifact(run_copy / "checkpoint")  # on its own it is a valid artifact
    with pytest.raises(ArtifactError, match="retrained, modified or replaced"):
        source_checkpoint(engine)


def test_audit_without_source_refuses_a_retrained_checkpoint(run_copy):
    from dlforge.adversarial.audit import run_audit

    _retrain_in_place(run_copy / "checkpoint")
    with pytest.raises(ArtifactError, match="lineage cannot be trusted"):
        run_audit([run_copy / "engine-fp32"], attacks=("fgsm",), eps=(0.1,), samples=16, progress=False)


def test_a_moved_run_directory_keeps_its_verified_lineage(run_copy, tmp_path):
    moved = tmp_path / "moved"
    shutil.move(run_copy, moved)
    assert source_checkpoint(open_artifact(moved / "engine-int8")).path == moved / "checkpoint"


def test_symlinked_payload_is_refused(run_copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    payload = run_copy / "engine-fp32" / "model.onnx"
    shutil.copyfile(payload, outside)
    payload.unlink()
    payload.symlink_to(outside)
    with pytest.raises(ArtifactError, match="symbolic link"):
        open_artifact(run_copy / "engine-fp32")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(kind="banana"), "kind is 'banana'"),
    (lambda c: c.update(precision="banana"), "precision is 'banana'"),
    (lambda c: c["model"].update(value_range=[1, 0]), "value_range"),
    (lambda c: c["model"].update(inputs="x"), "model.inputs must be a non-empty list"),
    (lambda c: c["model"]["inputs"][0].update(dtype="float99"), "dtype 'float99'"),
    (lambda c: c["model"].update(labels=[0, 1]), "labels must be a list of strings"),
    (lambda c: c["model"].update(task="detection"), "model.task"),
    (lambda c: c.update(payload="../model.onnx"), "outside its directory"),
])
def test_card_values_are_validated(run_copy, edit, message):
    card_path = run_copy / "engine-fp32" / "card.json"
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match=message):
        open_artifact(run_copy / "engine-fp32")


def test_zero_byte_payload_is_not_an_engine(run_copy):
    payload = run_copy / "engine-fp32" / "model.onnx"
    payload.write_bytes(b"")
    card = json.loads((run_copy / "engine-fp32" / "card.json").read_text())
    card["sha256"] = sha256_file(payload)
    (run_copy / "engine-fp32" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="empty"):
        open_artifact(run_copy / "engine-fp32")


def _external_data_model(directory: Path, location: str) -> Path:
    import onnx
    from onnx import helper, numpy_helper

    directory.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(directory / "model.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    if location != "w.bin":
        m = onnx.load(str(directory / "model.onnx"), load_external_data=False)
        for entry in m.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save(m, str(directory / "model.onnx"))
    return directory / "model.onnx"


def test_external_data_is_hashed_in_the_card_and_verified(tmp_path):
    src = _external_data_model(tmp_path / "src", "w.bin")
    info = ModelInfo("m", "classification", (TensorSpec("x", ("batch", 4), "float32"),),
                     (TensorSpec("y", ("batch", 4), "float32"),))
    with ArtifactWriter(tmp_path / "art") as writer:
        shutil.copyfile(src, writer.file("model.onnx"))
        shutil.copyfile(src.parent / "w.bin", writer.file("w.bin"))
        artifact = writer.commit(Card(kind="onnx", payload="model.onnx", model=info, params={}, env={}))
    assert set(artifact.card.sections["external_data"]) == {"w.bin"}
    with open_deployed(artifact.path) as m:
        np.testing.assert_allclose(m.predict(np.ones((3, 4), np.float32)), np.ones((3, 4)))
    (tmp_path / "art" / "w.bin").write_bytes(np.zeros((4, 4), np.float32).tobytes())
    with pytest.raises(ArtifactError, match="external-data file"):
        open_artifact(tmp_path / "art")


def test_external_data_outside_the_directory_is_refused_by_dlforge_itself(tmp_path):
    from dlforge.onnx_external import check_external_data

    (tmp_path / "secret.bin").write_bytes(np.eye(4, dtype=np.float32).tobytes())
    model = _external_data_model(tmp_path / "model", "../secret.bin")
    with pytest.raises(InputError, match="outside the model's directory"):
        check_external_data(model)
    with pytest.raises(InputError, match="outside the model's directory"):
        open_deployed(model)


# -- --force -------------------------------------------------------------------------------------
def test_force_refuses_a_directory_that_is_not_an_artifact(tmp_path):
    user = tmp_path / "documents"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not a dlforge artifact"):
        ArtifactWriter(user, force=True)
    assert (user / "thesis.tex").read_text() == "precious"


def test_force_never_replaces_the_input_or_a_directory_holding_it(digits_onnx, tmp_path):
    from dlforge.build import engine_from_onnx

    run = tmp_path / "runs" / "x"
    shutil.copytree(digits_onnx.path, run / "onnx")
    for out in (run / "onnx", run):
        with pytest.raises(InputError, match="input|not a dlforge artifact"):
            engine_from_onnx(run / "onnx", out, force=True)
    assert open_artifact(run / "onnx").card.sha256 == digits_onnx.card.sha256


def test_force_replaces_an_artifact_atomically(digits_onnx, tmp_path):
    info = digits_onnx.card.model

    def write(text):
        with ArtifactWriter(tmp_path / "a", force=True) as w:
            w.file("p.json").write_text(text)
            return w.commit(Card(kind="audit", payload="p.json", model=info, params={}, env={}))

    write("old")
    write("new")
    assert (tmp_path / "a" / "p.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no staging or .old leftovers


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "f").write_text("a"), (b / "f").write_text("b")
    if not exchange(a, b):
        pytest.skip("this kernel or file system has no renameat2(RENAME_EXCHANGE); the fallback is two renames")
    assert (a / "f").read_text() == "b" and (b / "f").read_text() == "a"


def test_sigterm_removes_staging_and_temporary_files(digits_onnx, tmp_path):
    """A CLI killed by SIGTERM mid-build leaves neither the output, a .partial directory, nor temp files."""
    script = tmp_path / "slow_build.py"
    script.write_text(
        "import sys, time\n"
        "import dlforge.backends.ort.compile as ort\n"
        "def slow(src, dst):\n"
        "    print('compiling', flush=True)\n"
        "    time.sleep(120)\n"
        "ort.optimize_fp32 = slow\n"
        "from dlforge.cli import cli\n"
        "cli.main(sys.argv[1:])\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out" / "engine"
    proc = subprocess.Popen([sys.executable, str(script), "build", str(digits_onnx.path), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "TMPDIR": str(tmp)})
    assert proc.stdout.readline().strip() == "compiling"
    assert any(p.name.startswith("dlforge-build-") for p in tmp.iterdir())  # the build's temp dir exists
    assert any((tmp_path / "out").iterdir())  # and its staging dir
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "terminated" in err and "Traceback" not in err
    assert not out.exists()
    assert list((tmp_path / "out").iterdir()) == []
    assert [p.name for p in tmp.iterdir() if p.name.startswith("dlforge-")] == []


def test_engine_cache_entries_are_verified_before_reuse(tmp_path):
    from dlforge.backends.tensorrt.compile import load_cached_engine, store_cached_engine

    cached = tmp_path / "cache" / "key.engine"
    store_cached_engine(cached, b"serialized engine")
    assert load_cached_engine(cached, tmp_path / "a.engine") and (tmp_path / "a.engine").read_bytes() == b"serialized engine"
    cached.write_bytes(b"tampered engine!!")
    assert not load_cached_engine(cached, tmp_path / "b.engine") and not (tmp_path / "b.engine").exists()
    cached.with_suffix(".sha256").unlink()
    assert not load_cached_engine(cached, tmp_path / "c.engine")
