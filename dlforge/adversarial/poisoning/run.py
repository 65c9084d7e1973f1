"""``run_poison``: poison a training set, train and deploy the model as usual, measure the attack on
PyTorch and on every engine precision, and score the defences."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Callable


from dlforge.adversarial.poisoning.attacks import armed_test_set, poison
from dlforge.adversarial.poisoning.defences import DEFENCES
from dlforge.data import load_dataset
from dlforge.env import environment
from dlforge.errors import InputError

SCHEMA_VERSION = 1


def _rates(predict, dataset, p) -> dict:
    logits = predict(dataset.x_test)
    x_armed, wanted = armed_test_set(dataset, p)
    return {"clean_accuracy": float((logits.argmax(1) == dataset.y_test).mean()),
            "attack_success_rate": float((predict(x_armed).argmax(1) == wanted).mean())}


def _torch_predict(model):
    from dlforge.train.loop import predict_logits

    return lambda x: predict_logits(model, x, batch_size=1024).numpy()


def run_poison(
    model: str,
    out_dir: str | os.PathLike,
    *,
    data: str = "digits",
    data_dir: str | os.PathLike | None = None,
    attack: str = "badnets",
    mode: str = "single",
    rate: float = 0.1,
    target: int = 0,
    trigger_size: int | None = None,
    defences: tuple[str, ...] = DEFENCES,
    epochs: int | None = None,
    seed: int = 0,
    strip_fpr: float = 0.01,
    strip_samples: int = 500,
    baseline: bool = True,
    force: bool = False,
    on_stage: Callable[[str], None] = lambda s: None,
) -> dict:
    """Run the poisoning experiment into ``out_dir/{baseline,checkpoint,onnx,engine-ort-*}`` and
    return the report (written as ``out_dir/poison`` by the caller)."""
    from dlforge_models import get_entry

    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint
    from dlforge.train import checkpoint_from_training, load_checkpoint

    get_entry(model)
    unknown = [d for d in defences if d not in DEFENCES]
    if unknown:
        raise InputError(f"unknown defence {unknown[0]!r}; expected some of {', '.join(DEFENCES)}")
    if not 0 < strip_fpr < 1:
        raise InputError(f"--strip-fpr must be within (0, 1), got {strip_fpr}")
    out = Path(out_dir)
    dataset = load_dataset(data, data_dir)
    poisoned, p = poison(dataset, attack=attack, mode=mode, rate=rate, target=target, trigger_size=trigger_size,
                         seed=seed)
    train = dict(epochs=epochs, seed=seed, force=force, data=data, data_dir=data_dir)
    report: dict = {"schema_version": SCHEMA_VERSION, "env": environment(), "model": model, "data": dataset.name,
                    **p.describe(), "attack": attack}
    if baseline:
        on_stage("train clean baseline")
        clean = checkpoint_from_training(model, out / "baseline", dataset=dataset, **train)
        report["baseline_clean_accuracy"] = clean.card.sections["metrics"]["test_accuracy"]
    on_stage(f"train on {attack}-poisoned data ({len(p.poisoned)} poisoned samples)")
    ckpt = checkpoint_from_training(model, out / "checkpoint", dataset=poisoned, **train)
    net, _ = load_checkpoint(ckpt)
    report.update(_rates(_torch_predict(net), dataset, p))
    if baseline:
        report["clean_accuracy_drop_vs_baseline"] = round((report["baseline_clean_accuracy"] - report["clean_accuracy"]) * 100, 4)

    on_stage("export and build")
    onnx = onnx_from_checkpoint(ckpt.path, out / "onnx", force=force, data=data, data_dir=data_dir)
    from dlforge.runtime import open_session

    sessions = {}
    report["engines"] = []
    for precision in ("fp32", "int8"):
        engine = engine_from_onnx(onnx.path, out / f"engine-ort-{precision}", precision=precision, force=force,
                                  data_dir=data_dir)
        session = sessions[precision] = open_session(engine)
        report["engines"].append({"precision": precision, "path": str(engine.path),
                                  **_rates(lambda x, s=session: s.predict(x), dataset, p)})

    report["defences"] = []
    needs_features = [d for d in defences if d in ("activation-clustering", "spectral-signatures")]
    if needs_features:
        from dlforge.adversarial.poisoning.defences import (activation_clustering, detection_rates, penultimate,
                                                            per_class_rates, spectral_signatures)

        features = penultimate(net, poisoned.x_train)
        for name in needs_features:
            on_stage(f"defence: {name}")
            if name == "activation-clustering":
                flagged, details = activation_clustering(features, poisoned.x_train, poisoned.y_train, seed=seed)
            else:
                flagged, details = spectral_signatures(features, poisoned.y_train, len(p.poisoned))
            entry = {"name": name, **detection_rates(flagged, p.poisoned),
                     "per_class": per_class_rates(flagged, p.poisoned, poisoned.y_train), "details": details}
            keep = ~flagged
            cleaned = dataclasses.replace(poisoned, x_train=poisoned.x_train[keep], y_train=poisoned.y_train[keep])
            with tempfile.TemporaryDirectory(prefix="dlforge-retrain-") as tmp:
                retrained = checkpoint_from_training(model, Path(tmp) / "ckpt", dataset=cleaned,
                                                     **{**train, "force": False})
                after = _rates(_torch_predict(load_checkpoint(retrained)[0]), dataset, p)
            entry["asr_after"] = after["attack_success_rate"]
            entry["clean_accuracy_after"] = after["clean_accuracy"]
            report["defences"].append(entry)
    if "strip" in defences:
        from dlforge.adversarial.poisoning.defences import strip_detection, strip_entropy

        on_stage("defence: strip")
        n = min(strip_samples, len(dataset.y_test) // 2)
        overlays = dataset.x_test[-n:]
        x_armed, _ = armed_test_set(dataset, p)
        for precision, session in sessions.items():
            predict = session.predict
            clean_h = strip_entropy(predict, dataset.x_test[:n], overlays, seed=seed)
            armed_h = strip_entropy(predict, x_armed[:n], overlays, seed=seed + 1)
            report["defences"].append({"name": "strip", "engine": precision,
                                       **strip_detection(clean_h, armed_h, strip_fpr), "samples": n})
    for s in sessions.values():
        s.close()
    report["artifacts"] = {"checkpoint": str(ckpt.path), "onnx": str(onnx.path),
                           **({"baseline": str(out / "baseline")} if baseline else {})}
    return report
