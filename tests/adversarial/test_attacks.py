"""Attack contract tests (every attack) and each attack's own properties."""

import numpy as np
import pytest
import torch

from dlforge.adversarial.attacks import ATTACKS, Target, make_attack
from dlforge.adversarial.attacks.fgsm import FGSM
from dlforge.adversarial.attacks.pgd import PGD
from dlforge.adversarial.attacks.square import Square, square_fraction
from dlforge.adversarial.attacks.projection import distance, project
from dlforge.adversarial.attacks.torch_model import TorchModel
from dlforge.errors import InputError
from dlforge.runtime import open_session
from dlforge.train import load_checkpoint


@pytest.fixture(scope="module")
def digits_batch(digits):
    return digits.x_test[:128], digits.y_test[:128]


@pytest.fixture(scope="module")
def model(digits_lenet):
    m, _ = load_checkpoint(digits_lenet.path)
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


def _run(attack, model, session, x, y, eps):
    """Every attack through the one convention: the same target (the engine's answers, the source's gradients)."""
    return attack.craft(Target(session.predict, TorchModel(model), 64), x, y, eps=eps).x_adv


@pytest.mark.parametrize("name", ATTACKS.names())  # probes (their own registry): test_probes.py
def test_contract_stays_in_ball_and_range_and_weakens_accuracy(name, model, digits_engines, digits_batch):
    x, y = digits_batch
    attack = make_attack(name, steps=10, queries=200, iterations=20, square_queries=200)
    eps_list = (0.0, 1.0, 3.0) if attack.norm == "l2" else (0.0, 0.1, 0.3)
    session = open_session(digits_engines["fp32"].path)
    accs = []
    for eps in eps_list:
        x_adv = _run(attack, model, session, x, y, eps)
        assert x_adv.shape == x.shape and x_adv.dtype == np.float32
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        assert (distance(x_adv, x, attack.norm) <= eps + 1e-5).all()
        if eps == 0:
            np.testing.assert_array_equal(x_adv, x)
        accs.append(float((session.predict(x_adv).argmax(1) == y).mean()))
    assert accs[0] >= accs[1] >= accs[2]
    assert accs[2] <= accs[0] - 0.3, accs


def test_fgsm_equals_an_independent_reference(model, digits_batch):
    x, y = digits_batch
    eps = 0.1
    xt = torch.from_numpy(x).clone().requires_grad_(True)
    loss = torch.nn.CrossEntropyLoss(reduction="mean")(model(xt), torch.from_numpy(y))
    loss.backward()
    expected = torch.clamp(xt.detach() + eps * xt.grad.sign(), 0.0, 1.0).numpy()
    got = FGSM().run(model, torch.from_numpy(x), torch.from_numpy(y), eps=eps).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)


def test_targeted_fgsm_moves_towards_the_target(model, digits_batch):
    x, y = digits_batch
    target = torch.from_numpy((y + 1) % 10)
    with torch.no_grad():
        before = model(torch.from_numpy(x)).gather(1, target[:, None]).mean()
        x_adv = FGSM(targeted=True).run(model, torch.from_numpy(x), torch.from_numpy(y), eps=0.2, target=target)
        after = model(x_adv).gather(1, target[:, None]).mean()
    assert after > before + 1.0


def test_pgd_is_at_least_as_strong_as_fgsm(model, digits_batch):
    x, y = (torch.from_numpy(a) for a in digits_batch)
    with torch.no_grad():
        acc = {name: float((model(a.run(model, x, y, eps=0.15)).argmax(1) == y).float().mean())
               for name, a in (("fgsm", FGSM()), ("pgd", PGD(steps=20)))}
    assert acc["pgd"] <= acc["fgsm"]


def test_pgd_random_start_is_seeded(model, digits_batch):
    x, y = (torch.from_numpy(a) for a in digits_batch)
    a = PGD(steps=3, seed=5).run(model, x, y, eps=0.1)
    assert torch.equal(a, PGD(steps=3, seed=5).run(model, x, y, eps=0.1))
    assert not torch.equal(a, PGD(steps=3, seed=6).run(model, x, y, eps=0.1))


def test_square_respects_its_query_budget(digits_engines, digits_batch):
    x, y = digits_batch
    session = open_session(digits_engines["fp32"].path)
    calls = []

    def counting(batch):
        calls.append(len(batch))
        return session.predict(batch)

    result = Square(queries=50, seed=1).run(counting, x, y, eps=0.05)
    assert result.queries.max() <= 50 and sum(calls) == result.queries.sum()


def test_square_schedule_halves_the_window():
    assert square_fraction(0.8, 0, 1000) == 0.8
    assert square_fraction(0.8, 3, 1000) == 0.4       # past 10/10000 of the budget
    assert square_fraction(0.8, 11, 5000, rescale=False) == 0.4 and square_fraction(0.8, 4500, 5000, False) == 0.8 / 2**7
    assert square_fraction(0.8, 100, 1000) == 0.8 / 2**4  # 1000/10000: after 10, 50, 200 and 500
    assert square_fraction(0.8, 999, 1000) == 0.8 / 2**9


def test_projection_clips_linf_and_rescales_l2():
    rng = np.random.default_rng(0)
    x = rng.random((5, 1, 4, 4)).astype(np.float32)
    far = x + rng.normal(0, 2, x.shape).astype(np.float32)
    assert np.all(distance(project(far, x, 0.1, "linf", (0, 1)), x, "linf") <= 0.1 + 1e-6)
    p = project(far, x, 0.5, "l2", (-10, 10))  # wide range: the L2 rescale alone decides
    np.testing.assert_allclose(distance(p, x, "l2"), 0.5, rtol=1e-5)
    t = project(torch.from_numpy(far), torch.from_numpy(x), 0.5, "l2", (-10, 10))
    np.testing.assert_allclose(t.numpy(), p, atol=1e-6)


def test_unknown_attack():
    with pytest.raises(InputError, match="unknown attack 'cw'"):
        make_attack("cw")
