import pytest
import torch
from click.testing import CliRunner

from dlforge.cli import cli
from dlforge.errors import InputError
from dlforge.train import TrainOptions, checkpoint_from_training
from dlforge.train.adversarial import fgsm_objective, objective_from_options, pgd_objective, ramped_eps
from tests.cli.test_cli_errors import assert_clean_failure


class Recorder(torch.nn.Module):
    """A small classifier that keeps the input of its last forward pass: the batch a step trained on."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        self.last = None

    def forward(self, x):
        self.last = x.detach().clone()
        return self.net(x)


def batch(seed: int = 0):
    torch.manual_seed(seed)
    return Recorder(), torch.rand(32, 1, 4, 4), torch.randint(0, 3, (32,))


def test_the_eps_ramps_linearly_from_0_to_the_full_eps_over_the_warmup_steps():
    assert [ramped_eps(0.3, step, 4) for step in range(7)] == pytest.approx([0, 0.075, 0.15, 0.225, 0.3, 0.3, 0.3])
    assert ramped_eps(0.3, 0, 0) == 0.3


@pytest.mark.parametrize("make", [lambda w: pgd_objective(0.3, 5, warmup_steps=w),
                                  lambda w: fgsm_objective(0.3, warmup_steps=w)], ids=["pgd", "fgsm"])
def test_each_step_of_a_warm_up_trains_on_examples_inside_its_own_eps_box_and_the_range(make):
    model, x, y = batch()
    objective = make(4)
    for step in range(6):
        objective(model, x, y)
        distance = float((model.last - x).abs().max())
        assert distance <= ramped_eps(0.3, step, 4) + 1e-6
        assert 0 <= model.last.min() and model.last.max() <= 1
        if step:  # the attack moves as far as its box lets it, so the ramp is not a no-op
            assert distance > 0.9 * ramped_eps(0.3, step, 4)


def test_a_warmed_up_pgd_objective_starts_clean_and_ends_as_the_full_eps_objective():
    model, x, y = batch()
    ce = torch.nn.functional.cross_entropy
    warm = pgd_objective(0.3, 5, warmup_steps=2)
    assert warm(model, x, y) == ce(model(x), y)
    warm(model, x, y)
    torch.manual_seed(1)
    after_warmup = warm(model, x, y)
    torch.manual_seed(1)
    assert after_warmup == pgd_objective(0.3, 5)(model, x, y)
    assert after_warmup > ce(model(x), y) + 0.01


def test_the_warm_up_is_counted_in_epochs_of_the_given_steps():
    model, x, y = batch()
    objective = objective_from_options(TrainOptions(adv_train="pgd", adv_eps=0.2, adv_warmup=2, epochs=3),
                                       steps_per_epoch=3)
    distances = []
    for _ in range(8):
        objective(model, x, y)
        distances.append(float((model.last - x).abs().max()))
    assert distances[0] == 0
    assert distances[3] == pytest.approx(0.1, abs=1e-6)
    assert distances[6:] == pytest.approx([0.2, 0.2], abs=1e-6)
    assert objective_from_options(TrainOptions(), steps_per_epoch=3) is None


@pytest.mark.parametrize("settings, message", [
    ({"adv_train": "pgd", "adv_warmup": -1}, "--adv-warmup must be a finite number >= 0 and <= 1000, got -1"),
    ({"adv_train": "pgd", "adv_warmup": 3, "epochs": 3}, "--adv-warmup 3 must be fewer than --epochs 3"),
])
def test_a_warm_up_is_refused_when_negative_or_as_long_as_the_training(settings, message):
    with pytest.raises(InputError, match=message):
        TrainOptions(**settings)


def test_a_warm_up_longer_than_the_models_default_epochs_is_refused_before_training(tmp_path):
    with pytest.raises(InputError, match="--adv-warmup 1000 must be fewer than --epochs "):
        checkpoint_from_training("mlp", tmp_path / "out", adv_train="pgd", adv_warmup=1000)
    assert not (tmp_path / "out").exists()


def test_the_card_records_the_warm_up_only_for_adversarial_training():
    assert TrainOptions(adv_warmup=2).params()["adv_warmup"] is None
    assert TrainOptions(adv_train="pgd", adv_warmup=2).params()["adv_warmup"] == 2
    assert TrainOptions().params()["adv_warmup"] is None


@pytest.mark.parametrize("args, message", [
    (["--adv-warmup", "-1"], "--adv-warmup must be a finite number >= 0 and <= 1000, got -1"),
    (["--adv-warmup", "2", "--epochs", "2"], "--adv-warmup 2 must be fewer than --epochs 2"),
])
def test_the_cli_refuses_a_bad_warm_up_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["train", "mlp", "--adv-train", "pgd", *args, "-o", str(tmp_path / "run" / "out")])
    assert_clean_failure(result, tmp_path / "run", message, code=2)


def test_a_warm_up_lowers_the_adversarial_loss_of_the_first_epoch(tmp_path):
    def first_epoch_loss(warmup):
        ckpt = checkpoint_from_training("mlp", tmp_path / str(warmup), epochs=2, adv_train="pgd", adv_eps=0.3,
                                        adv_steps=2, adv_warmup=warmup, overrides={"hidden": [32]}, progress=False)
        assert ckpt.card.params["adv_warmup"] == warmup
        return ckpt.card.sections["metrics"]["history"][0]["train_loss"]

    assert first_epoch_loss(1) < first_epoch_loss(0) - 0.03  # equal, seed for seed, if the ramp were ignored
