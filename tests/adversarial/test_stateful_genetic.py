"""Stateful query detection (dlforge.adversarial.stateful) and the genetic attack (dlforge.adversarial.attacks.genetic) on
real MNIST images: Blacklight matches a query on part of an image, keeps its false-positive rate under 1% on a
10,000-image benign stream, and flags Square within a few queries; refusing flagged queries stops Square but not the
adaptive attack (OARS); GenAttack stays in its constraint set and its oracle rejects candidates that only destroy the
digit."""

import numpy as np
import pytest

from dlforge.adversarial.attacks import Target, make_attack
from dlforge.adversarial.attacks.genetic import genetic_search
from dlforge.adversarial.stateful import Blacklight, History, Watched, benign_stream, oars_square
from tests.helpers import shared_path


@pytest.fixture(scope="module")
def mnist():
    from dlforge.artifact import DatasetSpec
    from dlforge.data import load_spec

    return load_spec(DatasetSpec("mnist", str(shared_path("mnist"))))


@pytest.fixture(scope="module")
def linear(mnist):
    """A real MNIST classifier small enough to train here in a second: logistic regression on 3,000 images."""
    from sklearn.linear_model import LogisticRegression

    x, y = mnist.x_train[:3000].reshape(3000, -1), mnist.y_train[:3000]
    model = LogisticRegression(max_iter=300).fit(x, y)
    return lambda z: model.decision_function(z.reshape(len(z), -1)).astype(np.float32)


def test_blacklight_matches_part_of_an_image(mnist):
    detector = Blacklight()
    a, b = mnist.x_test[0], mnist.x_test[1]
    patched = a.copy()
    patched[:, 4:12, 4:12] = 1.0  # a square of the image changed: the rest still matches
    history = History(detector)
    history.add(a[None])
    shared = history.add(np.stack([a, patched, b]))
    assert shared[0] == (detector.fingerprints(a[None])[0] > 0).sum()  # itself: every hash
    assert shared[1] >= detector.threshold  # the unchanged part
    assert shared[2] < detector.threshold  # another digit


def test_blacklight_benign_false_positive_rate_on_ten_thousand_queries(mnist):
    stream = benign_stream(mnist.x_test.astype(np.float32), (0.0, 1.0), seed=0)
    assert len(stream) == 10000
    flags = History(Blacklight()).flags(stream)
    assert flags.mean() <= 0.01, flags.mean()
    # the transformations are not the identity: exact repeats would all be flagged
    assert np.abs(stream - mnist.x_test).max() > 0.1


def test_blacklight_flags_square_and_refusal_stops_it_but_not_oars(mnist, linear):
    ok = np.flatnonzero(linear(mnist.x_test[:200]).argmax(1) == mnist.y_test[:200])[:10]
    x, y = mnist.x_test[ok].astype(np.float32), mnist.y_test[ok]
    results = {}
    for refuse in (False, True):
        watched = Watched(linear, Blacklight(), len(x), refuse=refuse)
        x_adv = np.stack([make_attack("square", queries=500, seed=i).run(
            lambda z, i=i: watched(z, np.full(len(z), i)), x[i:i + 1], y[i:i + 1], eps=0.1).x_adv[0]
            for i in range(len(x))])
        results[refuse] = (linear(x_adv).argmax(1) != y).mean(), watched
    success, watched = results[False]
    assert success >= 0.8  # a linear model falls to Square at eps 0.1
    long = watched.queries > 10  # an attack that took more than a handful of queries (the rest won at once)
    assert long.sum() >= 5 and (watched.first[long] > 0).all(), (watched.queries, watched.first)
    assert watched.first.max() <= 10, watched.first  # each flagged within 10 queries
    assert results[True][0] <= success - 0.4  # refused, Square stalls
    oars = Watched(linear, Blacklight(), len(x), refuse=True)
    x_oars = np.stack([oars_square(lambda z, i=i: oars(z, np.full(len(z), i)), x[i], int(y[i]), eps=0.1, queries=500,
                                   value_range=(0.0, 1.0), seed=i)[0] for i in range(len(x))])
    assert np.abs(x_oars - x).max() <= 0.1 + 1e-6
    assert (linear(x_oars).argmax(1) != y).mean() >= results[True][0] + 0.3  # the adaptive attack gets through


def test_genetic_attack_stays_in_its_constraint_and_counts_queries(mnist, linear):
    x, y = mnist.x_test[:30].astype(np.float32), mnist.y_test[:30]
    for constraint in ("linf", "add"):
        attack = make_attack(f"genetic:queries=600:constraint={constraint}")
        result = attack.craft(Target(linear), x, y, eps=0.3)
        delta = result.x_adv - x
        assert np.abs(delta).max() <= 0.3 + 1e-6 and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
        if constraint == "add":
            assert delta.min() >= 0  # strokes added, nothing erased
        assert (result.queries <= 600).all()
        fooled = linear(result.x_adv).argmax(1) != y
        assert fooled.mean() >= 0.5, (constraint, fooled.mean())
        # a point stops once fooled: fewer queries than the budget
        assert (result.queries[fooled] < 600).any()


def test_genetic_oracle_rejects_what_only_destroys_the_digit(mnist, linear):
    from dlforge.runtime import open_deployed

    oracle = open_deployed(shared_path("onnx-models", "mnist-12.onnx"))  # an independent model (ONNX Model Zoo)
    x, y = mnist.x_test[:40].astype(np.float32), mnist.y_test[:40]
    keep = (oracle.predict(x).argmax(1) == y) & (linear(x).argmax(1) == y)
    x, y = x[keep], y[keep]
    strokes = (x > 0.5).reshape(len(x), -1)
    ink = (x.reshape(len(x), -1) * strokes).sum(1)

    def erase(cands, rows):
        """An attacker whose goal is met by erasing the digit: fitness rewards less ink on its strokes, the goal is
        the target (the linear model) fooled with under a fifth of that ink left."""
        n, p = cands.shape[:2]
        left = (cands.reshape(n, p, -1) * strokes[rows][:, None]).sum(2) / ink[rows][:, None]
        wrong = linear(cands.reshape(n * p, *cands.shape[2:])).argmax(1).reshape(n, p) != y[rows][:, None]
        return -left, wrong & (left < 0.2)

    unconstrained, _, done, _ = genetic_search(erase, x, eps=1.0, value_range=(0.0, 1.0), queries=3000,
                                               rho=(0.3, 0.3), alpha=(1.0, 1.0))
    assert done.mean() >= 0.5, done.mean()
    destroyed = oracle.predict(unconstrained[done]).argmax(1) != y[done]
    assert destroyed.mean() >= 0.8  # those "evasions" are no longer the digit to an independent model
    kept, _, accepted, rejected = genetic_search(erase, x, eps=1.0, value_range=(0.0, 1.0), queries=3000,
                                                 rho=(0.3, 0.3), alpha=(1.0, 1.0), oracle=oracle.predict, y=y)
    assert rejected.sum() > 0 and accepted.sum() < done.sum()  # the oracle refused most of them ...
    # ... and whatever it accepted still shows the original digit to it; the rest stay the clean input
    assert (oracle.predict(kept[accepted]).argmax(1) == y[accepted]).all()
    # the rest come back as the fittest candidate the oracle did not refuse: none of them reaches the goal
    assert not erase(kept[~accepted][:, None], np.flatnonzero(~accepted))[1].any()


def test_stateful_probe_from_the_cli(digits_engines, tmp_path):
    import json

    from tests.helpers import assert_refused, dlforge, dlforge_ok

    out = tmp_path / "audit"
    dlforge_ok("audit", digits_engines["int8"].path, "--attacks", "stateful:attacks=6:window=8:top=20:threshold=10",
               "--eps", "0.3", "--samples", "20", "--square-queries", "200", "-o", out)
    section = json.loads((out / "audit.json").read_text())["probes"]["stateful"]
    rows = {r["attack"]: r for r in section["rows"]}
    assert set(rows) == {"square", "square+oars", "genetic", "substitute"}
    for r in rows.values():
        assert 0 <= r["benign_fpr"] <= 1 and r["benign_queries"] > 100
        assert r["success_refused"] is not None
    assert rows["square"]["success"] is not None and rows["square+oars"]["success"] is None  # OARS needs refusals
    assert_refused(dlforge("audit", digits_engines["int8"].path, "--attacks", "stateful:threshold=60", "--eps", "0.3",
                           "-o", tmp_path / "bad" / "audit"), "threshold (60) cannot exceed top (50)",
                   nothing_under=tmp_path / "bad")


def test_tile_hash_search_finds_the_original_of_a_perturbed_or_patched_image(mnist):
    from dlforge.adversarial.provenance import TileIndex, hash_distance, random_patch

    x = mnist.x_test[:60].astype(np.float32)
    gallery = np.concatenate([mnist.x_train[:20000].astype(np.float32), x])
    index = TileIndex(gallery, 4)
    originals = np.arange(len(x)) + 20000
    assert index.recovers(x, originals).mean() == 1.0
    rng = np.random.default_rng(0)
    found, changed = [], []
    for eps in (0.05, 0.3):
        noisy = np.clip(x + eps * rng.choice([-1.0, 1.0], size=x.shape), 0, 1).astype(np.float32)
        found.append(index.recovers(noisy, originals).mean())
        changed.append(hash_distance(x, noisy, 4).mean())
    assert found[0] >= 0.9 and changed[0] < 0.1  # small noise leaves most tiles' hashes alone
    assert found[1] < found[0] and changed[1] > changed[0]
    small, large = (index.recovers(random_patch(x, a), originals).mean() for a in (0.1, 0.5))
    assert small >= 0.7 and large < small  # the unpatched part finds the original while enough of it is left
    assert not index.recovers(mnist.x_test[60:120].astype(np.float32), originals).any()  # other digits: no match


@pytest.mark.slow
def test_similarity_encoder_keeps_its_false_positive_rate_and_flags_a_long_square_attack(mnist, linear):
    from dlforge.adversarial.stateful import SimilarityEncoder

    encoder = SimilarityEncoder(mnist.x_train, (0.0, 1.0), fpr=0.005)
    stream = benign_stream(mnist.x_test.astype(np.float32), (0.0, 1.0), seed=1)
    assert encoder.history().flags(stream).mean() <= 0.01
    ok = np.flatnonzero(linear(mnist.x_test[:200]).argmax(1) == mnist.y_test[:200])[:8]
    x, y = mnist.x_test[ok].astype(np.float32), mnist.y_test[ok]
    watched = Watched(linear, encoder, len(x))
    for i in range(len(x)):  # eps 0.05: Square needs hundreds of queries, past the encoder's k = 50
        make_attack("square", queries=400, seed=i).run(lambda z, i=i: watched(z, np.full(len(z), i)), x[i:i + 1],
                                                       y[i:i + 1], eps=0.05)
    long = watched.queries > 100
    assert long.sum() >= 3 and (watched.first[long] > 0).all(), (watched.queries, watched.first)


def test_genetic_search_ignores_refused_queries_and_counts_every_rejection():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (4, 1, 6, 6)).astype(np.float32), np.zeros(4, dtype=np.int64)

    def refused_half(cands, rows):  # NaN (a refused query) for half the population, a finite fitness elsewhere
        fit = -np.abs(cands - 0.5).reshape(*cands.shape[:2], -1).mean(2)
        fit[:, ::2] = np.nan
        return fit, np.zeros(fit.shape, dtype=bool)

    best, used, done, _ = genetic_search(refused_half, x, eps=0.2, value_range=(0.0, 1.0), queries=60)
    assert np.isfinite(best).all() and not done.any() and (used == 60).all()
    assert not np.array_equal(best, x)  # the fittest answered candidate, not a refused one, nor the clean input

    def always(cands, rows):
        return np.zeros(cands.shape[:2]), np.ones(cands.shape[:2], dtype=bool)

    never = lambda z: np.tile(np.array([[0.0, 1.0]], dtype=np.float32), (len(z), 1))  # noqa: E731  (never agrees)
    _, used, done, rejected = genetic_search(always, x, eps=0.2, value_range=(0.0, 1.0), queries=30, population=6,
                                             oracle=never, y=y)
    assert not done.any() and (rejected == 30).all()  # every candidate of every generation, counted once each
