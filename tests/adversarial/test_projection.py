"""An attack that leaves the eps-ball and the value range is projected by the audit and judged on the projection:
an attack cannot over-report robustness loss by cheating on its budget."""

from __future__ import annotations


import numpy as np

from dlforge.adversarial.attacks import ATTACKS, GradientAttack
from dlforge.adversarial.audit import run_audit
from dlforge.adversarial.attacks.projection import project


class Overshoot(GradientAttack):
    """FGSM ten times too far, plus a push outside the value range."""

    name = "overshoot"

    def run(self, model, x, y, *, eps, value_range=(0.0, 1.0), target=None):
        from dlforge.adversarial.attacks.fgsm import input_gradient

        grad = input_gradient(model, x, y)
        return x + 10 * eps * grad.sign() + 5.0


def test_the_audit_projects_and_judges_the_projected_input(digits_engines, tmp_path):
    ATTACKS.register("overshoot")(Overshoot)
    try:
        engine = digits_engines["fp32"]
        eps = 0.05
        report = run_audit([engine.path], attacks=("overshoot", "fgsm"), eps=(eps,), samples=60, per_sample=True,
                           progress=False)
        records = [r for r in report.per_sample["records"] if r["attack"] == "overshoot"]
        assert records and max(r["linf"] for r in records) <= eps + 1e-6  # inside the ball after the projection
        rows = {(r["attack"], r["route"]): r["robust_accuracy"] for r in report.rows}
        # x + 10 eps sign(g) + 5 projects to min(x + eps sign(g) + eps, 1): judged there, never at 5.0 outside the range
        from dlforge.data import load_dataset
        from dlforge.runtime import open_deployed

        ds = load_dataset("digits")
        x, y = ds.x_test[:60], ds.y_test[:60]
        with open_deployed(engine.path) as deployed:
            from dlforge.train.checkpoint import attack_model
            from dlforge.artifact import source_checkpoint

            model = attack_model(source_checkpoint(engine), "cpu")
            grad = model.input_gradients(x, y)
            cheat = x + 10 * eps * np.sign(grad) + 5.0
            projected = project(cheat, x, eps, "linf", (0.0, 1.0))
            clean = deployed.predict(x).argmax(1)
            expected = float(((clean == y) & (deployed.predict(projected).argmax(1) == y)).mean())
            assert np.abs(projected - x).max() <= eps + 1e-6 and projected.max() <= 1.0
        assert rows["overshoot", "transfer"] == expected
    finally:
        ATTACKS.unregister("overshoot")


def test_the_robust_accuracy_drift_and_the_precision_search_report_is_judged_on_the_projection(digits_engines):
    from dlforge.adversarial.attacks.robust import robust_accuracy
    from dlforge.train.checkpoint import attack_model
    from dlforge.artifact import source_checkpoint
    from dlforge.data import load_dataset
    from dlforge.runtime import open_deployed

    ds = load_dataset("digits")
    x, y = ds.x_test[:60], ds.y_test[:60]
    eps = 0.05
    with open_deployed(digits_engines["fp32"].path) as engine:
        model = attack_model(source_checkpoint(digits_engines["fp32"]), "cpu")
        got = robust_accuracy(model, Overshoot(), x, y, eps=eps, value_range=(0.0, 1.0), predict=engine.predict)
        cheat = x + 10 * eps * np.sign(model.input_gradients(x, y)) + 5.0
        unprojected = float(((engine.predict(x).argmax(1) == y) & (engine.predict(cheat).argmax(1) == y)).mean())
        projected = project(cheat, x, eps, "linf", (0.0, 1.0))
        expected = float(((engine.predict(x).argmax(1) == y) & (engine.predict(projected).argmax(1) == y)).mean())
    assert got == expected and got != unprojected
