"""A card whose values have the wrong type or meaning is bad input (exit 2), for every command that
reads it: export of a checkpoint, inspect of any artifact. The payload is intact (its sha256 still
matches), so only the card's value is wrong."""

import pytest

from tests.cli.tamper import tampered_copy
from tests.cli.test_cli_errors import assert_clean_failure
from tests.helpers import dlforge

run = dlforge


def _set(path: str, value):
    def edit(card):
        *parents, last = path.split(".")
        node = card
        for key in parents:
            node = node[key] if not isinstance(node, list) else node[int(key)]
        node[last if not isinstance(node, list) else int(last)] = value
    return edit


BAD_CARDS = [
    ("model.inputs", 5, "model.inputs must be a non-empty list"),
    ("model.inputs", {"name": "input"}, "model.inputs must be a non-empty list"),
    ("model.value_range", [1, 0], "model.value_range is [1, 0]"),
    ("model.value_range", ["0", "1"], "model.value_range"),
    ("model.labels", "0123456789", "model.labels must be a list of strings"),
    ("model.labels", [0, 1, 2], "model.labels must be a list of strings"),
    ("kind", "weights", "kind is 'weights'"),
    ("model.inputs.0.dtype", "float99", "dtype 'float99'"),
    ("model.task", "segmentation", "model.task is 'segmentation'"),
    ("model.inputs.0.shape", ["batch", -1, 8, 8], "has shape"),
]


@pytest.mark.parametrize("field, value, message", BAD_CARDS)
def test_export_refuses_a_card_with_a_bad_value(digits_lenet, tmp_path, field, value, message):
    bad = tampered_copy(digits_lenet.path, tmp_path / "in" / "ckpt", card=_set(field, value))
    result = run("export", bad, "-o", tmp_path / "run" / "out")
    assert_clean_failure(result, tmp_path / "run", message)
    assert not (tmp_path / "run" / "out").exists()


@pytest.mark.parametrize("field, value, message", BAD_CARDS)
def test_inspect_refuses_a_card_with_a_bad_value(digits_lenet, tmp_path, field, value, message):
    bad = tampered_copy(digits_lenet.path, tmp_path / "ckpt", card=_set(field, value))
    result = run("inspect", bad)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
