"""RBM likelihood diagnostics: the exact partition function, AIS against it, and the known failure of CD on
Bars-and-Stripes (Fischer & Igel 2010) reproduced with the DBN's own update."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dlforge.train.rbm import ais_log_partition, exact_log_partition, free_energy, log_likelihood


def _rbm(visible, hidden, seed=0, scale=0.8):
    rng = np.random.default_rng(seed)
    return rng.normal(0, scale, (hidden, visible)), rng.normal(0, 0.5, visible), rng.normal(0, 0.5, hidden)


def test_exact_partition_sums_to_one_either_way_round():
    W, b_v, b_h = _rbm(9, 7)
    log_z = exact_log_partition(W, b_v, b_h)  # enumerates the 7 hidden units
    states = ((np.arange(2 ** 9)[:, None] >> np.arange(9)) & 1).astype(float)
    assert np.exp(-free_energy(states, W, b_v, b_h) - log_z).sum() == pytest.approx(1.0, rel=1e-9)
    assert exact_log_partition(W.T, b_h, b_v) == pytest.approx(log_z, rel=1e-12)  # the transposed RBM: same Z


@pytest.mark.parametrize("visible,hidden", [(16, 10), (30, 14)])
def test_ais_agrees_with_the_exact_log_partition_within_its_standard_error(visible, hidden):
    W, b_v, b_h = _rbm(visible, hidden, seed=visible)
    data = (np.random.default_rng(1).random((300, visible)) < 0.3).astype(float)
    exact = exact_log_partition(W, b_v, b_h)
    est = ais_log_partition(W, b_v, b_h, data, runs=100, betas=np.linspace(0, 1, 2000), seed=2)
    assert abs(est.log_z - exact) <= 4 * est.standard_error + 0.02, (est, exact)
    crude = ais_log_partition(W, b_v, b_h, data, runs=100, betas=np.linspace(0, 1, 3), seed=2)
    assert abs(crude.log_z - exact) > abs(est.log_z - exact)  # the schedule matters: the check can fail


def bars_and_stripes(n=4) -> np.ndarray:
    patterns = set()
    for m in range(2 ** n):
        row = [(m >> i) & 1 for i in range(n)]
        patterns.add(tuple(np.repeat(row, n)))
        patterns.add(tuple(np.tile(row, n)))
    return np.array(sorted(patterns), dtype=np.float64)


def _train_bas(k, iterations, lr=0.1, persistent=False, every=1000):
    from dlforge_models.dbn import cd_step

    x = bars_and_stripes()
    torch.manual_seed(0)
    layer = nn.Linear(16, 16)
    nn.init.normal_(layer.weight, 0, 0.01)
    nn.init.zeros_(layer.bias)
    vbias, generator, velocity = torch.zeros(16), torch.Generator().manual_seed(0), {}
    xt = torch.tensor(x, dtype=torch.float32)
    curve = []
    with torch.no_grad():
        for it in range(iterations + 1):
            if it % every == 0:
                W, b_h, b_v = (t.double().numpy() for t in (layer.weight, layer.bias, vbias))
                ll = log_likelihood(x, W, b_v, b_h, exact_log_partition(W, b_v, b_h))
                hidden = 1 / (1 + np.exp(-(x @ W.T + b_h)))
                error = float(((x - 1 / (1 + np.exp(-(hidden @ W + b_v)))) ** 2).mean())
                curve.append((it, ll, error))
            cd_step(layer, vbias, xt, k, lr, generator, velocity, momentum=0.0, persistent=persistent)
    return curve


def test_cd1_on_bars_and_stripes_diverges_while_the_reconstruction_error_keeps_falling():
    """Fischer & Igel 2010: 4x4 Bars-and-Stripes (30 patterns), 16 hidden units, CD-1, batch learning, lr 0.1.
    The exact log-likelihood peaks and then falls, while the reconstruction error goes on falling."""
    curve = _train_bas(k=1, iterations=12000)
    its, ll, err = (np.array(c) for c in zip(*curve))
    peak = int(ll.argmax())
    assert 0 < peak < len(ll) - 3
    assert ll[-1] < ll[peak] - 2.0, curve  # nats per pattern
    assert err[-1] < err[peak] and err[-1] < 1e-3, curve


def test_pcd_keeps_a_fixed_set_of_binary_fantasy_particles():
    from dlforge_models.dbn import cd_step

    layer, vbias, velocity = nn.Linear(16, 8), torch.zeros(16), {}
    g = torch.Generator().manual_seed(0)
    x = torch.tensor(bars_and_stripes(), dtype=torch.float32)
    with torch.no_grad():
        cd_step(layer, vbias, x[:20], 1, 0.1, g, velocity, momentum=0.0, persistent=True)
        first = velocity["chain"].clone()
        cd_step(layer, vbias, x[20:23], 1, 0.1, g, velocity, momentum=0.0, persistent=True)  # a short last batch
    chain = velocity["chain"]
    assert chain.shape == (20, 16) and set(chain.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(chain, first)  # the particles moved


def test_the_dbn_reports_ais_log_likelihood_with_its_standard_error_and_a_pretraining_page(tmp_path):
    from dlforge.train import checkpoint_from_training

    ckpt = checkpoint_from_training("dbn", tmp_path / "dbn", epochs=1, progress=False,
                                    overrides={"hidden": [64, 32], "pretrain_epochs": 2})
    layers = ckpt.card.sections["metrics"]["pretraining"]["layers"]
    for layer in layers:
        final = layer["final"]
        assert final["log_z_method"] == "ais" and 0 < final["log_z_standard_error"] < 1
        assert final["log_likelihood_held_out"] < 0 and "pseudo_log_likelihood" in layer["epochs"][0]
        assert "log_z" not in layer["epochs"][0]  # AIS only after the last epoch
    page = (ckpt.path / "pretraining.html").read_text()
    assert "annealed importance sampling" in page and "data:image/png;base64," in page
