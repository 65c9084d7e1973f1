import subprocess
import sys

import numpy as np
import pytest
import torch

from dlforge.errors import InputError, StageFailed
from dlforge.train import TrainOptions, checkpoint_from_training
from dlforge.train.adversarial import fgsm_objective, linf_pgd
from dlforge.train.loop import fit


def test_the_card_records_the_options_with_the_model_defaults_filled_in(tmp_path):
    options = TrainOptions(epochs=1, overrides={"hidden": [16]})
    ckpt = checkpoint_from_training("mlp", tmp_path / "a", options, seed=3, progress=False)
    expected = {**TrainOptions(epochs=1, seed=3, batch_size=64, lr=1e-3, weight_decay=0.0,
                               overrides={"hidden": [16]}).params(), "model": "mlp"}
    assert ckpt.card.params == expected
    assert len(ckpt.card.sections["metrics"]["history"]) == 1


@pytest.mark.parametrize("settings, message", [
    ({"lr": float("inf")}, "--lr must be a finite number > 0, got inf"),
    ({"epochs": 0}, "--epochs must be a finite number >= 1"),
    ({"adv_train": "cw"}, "--adv-train: unknown value 'cw'"),
    ({"overrides": ["hidden=3"]}, "--set expects KEY=VALUE pairs"),
    ({"image_size": "28x"}, "--image-size expects H or HxW in pixels, e.g. 28 or 28x32, got '28x'"),
    ({"channels": 2}, "--channels must be 1 "),
    ({"image_size": 16}, "--image-size and --channels apply to image folders, and --data digits is not one"),
])
def test_the_python_api_refuses_what_the_cli_refuses(tmp_path, settings, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        checkpoint_from_training("mlp", tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def test_adversarial_training_on_a_reconstruction_model_is_refused(tmp_path):
    with pytest.raises(InputError, match="--adv-train needs a classifier; autoencoder is a reconstruction model"):
        checkpoint_from_training("autoencoder", tmp_path / "out", adv_train="fgsm")


def test_a_diverging_run_is_a_stage_failure():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x, y = np.zeros((8, 1, 2, 2), np.float32), np.zeros(8, np.int64)
    with pytest.raises(StageFailed, match="training diverged: the loss is nan in epoch 1"):
        fit(model, x, y, x, y, epochs=2, batch_size=4, lr=1e-3, progress=False,
            objective=lambda m, xb, yb: m(xb).sum() * float("nan"))


def test_pgd_examples_stay_in_the_eps_box_and_the_range_and_raise_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = torch.rand(32, 1, 4, 4)
    y = torch.randint(0, 3, (32,))
    x_adv = linf_pgd(model, x, y, eps=0.1, steps=10)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    ce = torch.nn.functional.cross_entropy
    assert ce(model(x_adv), y) > ce(model(x), y) + 0.01
    assert fgsm_objective(0.1)(model, x, y) > ce(model(x), y)


def test_training_imports_the_attack_layer_only():
    """PGD training runs the audit's PGD (one implementation), from the attack layer below the stages; nothing
    above it (audit, probes, detectors, poisoning) is imported by training."""
    code = ("import sys\n"
            "from dlforge.train import checkpoint_from_training\n"
            "import tempfile, pathlib\n"
            "out = pathlib.Path(tempfile.mkdtemp()) / 'ckpt'\n"
            "checkpoint_from_training('mlp', out, epochs=1, adv_train='pgd', adv_steps=2, overrides={'hidden': [16]},"
            " progress=False)\n"
            "print(sorted(m for m in sys.modules if m.startswith('dlforge.adversarial')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    loaded = eval(proc.stdout.strip())
    assert "dlforge.adversarial.attacks.pgd" in loaded
    assert all(m in ("dlforge.adversarial", "dlforge.adversarial.attacks")
               or m.startswith("dlforge.adversarial.attacks.") for m in loaded), loaded
    assert not any(m.startswith("dlforge.adversarial.probes") for m in loaded)
