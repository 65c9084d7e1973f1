import json

import pytest

from dlforge.artifact import (ArtifactWriter, Card, ModelInfo, TensorSpec, open_artifact, sha256_file)
from dlforge.errors import ArtifactError, InputError


def _card(kind="checkpoint"):
    info = ModelInfo(name="m", task="classification", inputs=(TensorSpec("input", ("batch", 1, 8, 8), "float32"),),
                     outputs=(TensorSpec("logits", ("batch", 10), "float32"),), labels=tuple("0123456789"))
    return Card(kind=kind, payload="payload.bin", model=info, params={"a": 1}, env={},
                sections={"metrics": {"test_accuracy": 0.5}})


def _write(path, data=b"weights", **kw):
    with ArtifactWriter(path, **kw) as w:
        w.file("payload.bin").write_bytes(data)
        return w.commit(_card())


def test_roundtrip_records_sha256_and_sections(tmp_path):
    art = _write(tmp_path / "a")
    loaded = open_artifact(tmp_path / "a", ["checkpoint"])
    assert loaded.card.sha256 == sha256_file(tmp_path / "a" / "payload.bin") == art.card.sha256
    assert loaded.card.model == art.card.model
    assert loaded.card.sections["metrics"]["test_accuracy"] == 0.5
    raw = json.loads((tmp_path / "a" / "card.json").read_text())
    for key in ("schema_version", "kind", "payload", "sha256", "parent", "model", "params", "env"):
        assert key in raw
    assert raw["model"]["inputs"][0] == {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}


def test_modified_payload_is_refused(tmp_path):
    _write(tmp_path / "a")
    (tmp_path / "a" / "payload.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="does not match its card"):
        open_artifact(tmp_path / "a")


def test_wrong_kind_names_the_command_that_makes_the_right_one(tmp_path):
    _write(tmp_path / "a")
    with pytest.raises(ArtifactError, match=r"is a checkpoint artifact; expected an onnx artifact \(from `dlforge export`\)"):
        open_artifact(tmp_path / "a", ["onnx"])


def test_directory_without_card_is_not_an_artifact(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ArtifactError, match="not a dlforge artifact"):
        open_artifact(tmp_path / "x")


def test_failure_inside_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ArtifactWriter(tmp_path / "a") as w:
            w.file("payload.bin").write_bytes(b"half")
            raise RuntimeError("crash mid-stage")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_forced(tmp_path):
    _write(tmp_path / "a", b"one")
    with pytest.raises(InputError, match="--force"):
        ArtifactWriter(tmp_path / "a")
    assert open_artifact(tmp_path / "a").payload_path.read_bytes() == b"one"
    _write(tmp_path / "a", b"two", force=True)
    assert open_artifact(tmp_path / "a").payload_path.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_payload_outside_directory_is_refused(tmp_path):
    _write(tmp_path / "a")
    card = json.loads((tmp_path / "a" / "card.json").read_text())
    card["payload"] = "../evil.bin"
    (tmp_path / "evil.bin").write_bytes(b"x")
    (tmp_path / "a" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="outside its directory"):
        open_artifact(tmp_path / "a")


def test_unwritable_output_fails_before_work(tmp_path):
    (tmp_path / "file").write_text("not a dir")
    with pytest.raises(InputError, match="cannot write the output directory"):
        ArtifactWriter(tmp_path / "file" / "out")
