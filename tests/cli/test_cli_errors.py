"""The CLI's error contract: one line on stderr, exit code 2 for bad input, no artifact left."""

import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import assert_refused, dlforge

run = dlforge


def assert_clean_failure(result, out_root, message, code=2):
    assert_refused(result, message, code=code, nothing_under=out_root)


def test_unknown_model(tmp_path):
    assert_clean_failure(run("train", "resnet", "-o", str(tmp_path / "o")), tmp_path, "unknown model 'resnet'")


def test_missing_data_dir(tmp_path):
    result = run("train", "lenet", "--data", "mnist", "--data-dir", str(tmp_path / "none"), "-o", str(tmp_path / "o"))
    assert_clean_failure(result, tmp_path, "does not exist; put the four IDX files")


def test_truncated_idx(tmp_path, mnist_dir):
    d = tmp_path / "mnist"
    shutil.copytree(mnist_dir, d)
    raw = gzip.decompress((d / "train-labels-idx1-ubyte.gz").read_bytes())
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:1000]))
    result = run("train", "mlp", "--data", "mnist", "--data-dir", str(d), "-o", str(tmp_path / "o"))
    assert_clean_failure(result, tmp_path, "is truncated")


def test_npz_without_y(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 8, 8), np.uint8))
    result = run("train", "mlp", "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "o"))
    assert_clean_failure(result, tmp_path, "has no 'y' array")


def test_unwritable_output(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = run("train", "mlp", "-o", str(tmp_path / "afile" / "out"))
    assert_clean_failure(result, tmp_path, "cannot write the output directory")


@pytest.mark.parametrize("flag, value, bound", [("--epochs", "-1", ">= 1"), ("--epochs", "0", ">= 1"),
                                               ("--batch-size", "0", ">= 1"), ("--lr", "-0.1", "> 0")])
def test_non_positive_numbers(tmp_path, flag, value, bound):
    result = run("train", "mlp", flag, value, "-o", str(tmp_path / "o"))
    assert_clean_failure(result, tmp_path, f"{flag} must be a finite number {bound}, got {value}")


def test_usage_error_is_one_line(tmp_path):
    assert_clean_failure(run("train", "mlp", "--bogus", "-o", str(tmp_path / "o")), tmp_path, "No such option '--bogus'")


def test_existing_output_is_not_overwritten(tmp_path, digits_lenet):
    target = tmp_path / "ckpt"
    shutil.copytree(digits_lenet.path, target)
    before = (target / "card.json").read_text()
    result = run("train", "mlp", "-o", str(target))
    assert result.exit_code == 2 and "--force" in result.stderr
    assert (target / "card.json").read_text() == before


def test_console_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dlforge", "train", "nosuch", "-o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: unknown model 'nosuch'; available: autoencoder, dbn, kws, lenet")


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dlforge", "--debug", "train", "nosuch", "-o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" in proc.stderr  # the documented code, traceback or not
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown model 'nosuch'")


def test_models_json_lists_the_zoo():
    result = run("models", "--json")
    assert result.exit_code == 0
    names = [m["name"] for m in json.loads(result.stdout)["models"]]
    assert {"lenet", "mlp", "lstm"} <= set(names)
