"""``run_poison``: poison a training set, train and deploy the model as usual, measure the attack on
PyTorch and on every engine precision, and score the defences."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dlforge.adversarial.poisoning.attacks import ATTACKS, MODES, armed_test_set, poison
from dlforge.artifact import check_output
from dlforge.data import load_dataset
from dlforge.env import environment
from dlforge.errors import InputError
from dlforge.options import Options, option

SCHEMA_VERSION = 1


def _defence_names() -> tuple[str, ...]:
    from dlforge.adversarial.poisoning.defences import DATASET_DEFENCES

    return (*DATASET_DEFENCES.names(), "strip")


@dataclass
class PoisonOptions(Options):
    data: str = option("digits", "digits, mnist, fashion-mnist, or a .npz file with x and y.", nonempty=True)
    data_dir: str | None = option(None, "Directory of the IDX files (MNIST, Fashion-MNIST).")
    attack: str = option("badnets", "Poisoning attack.", choices=ATTACKS)
    mode: str = option("single", "BadNets: every class to --target-class, or class i to i+1.", choices=MODES)
    rate: float = option(0.1, "Fraction of training samples poisoned.", min=0, max=1, min_open=True, max_open=True)
    target_class: int = option(0, "Class the backdoor or the flipped labels point to.", min=0)
    trigger_size: int | None = option(None, "BadNets trigger side in pixels (default: width / 9, at least 2).", min=1)
    defences: tuple[str, ...] = option(("activation-clustering", "spectral-signatures", "strip"),
                                       "Defences to score (empty for none).", choices=_defence_names)
    strip_fpr: float = option(0.01, "STRIP's false-positive rate on clean inputs.", min=0, max=1, min_open=True,
                              max_open=True)
    strip_samples: int = option(500, "Clean and triggered test images STRIP is scored on.", min=1)
    epochs: int | None = option(None, "Training epochs (default: the model's).", min=1)
    seed: int = option(0, "Seed of the poisoning and the training.", min=0)
    baseline: bool = option(True, "Also train the clean model for comparison.")
    dynamic_batch: bool = option(True, "Export the batch dimension as dynamic, or fixed at 1.")
    max_batch: int | None = option(None, "Largest batch the engines accept (their batch range).", min=1)


def _rates(predict, dataset, p) -> dict:
    logits = predict(dataset.x_test)
    x_armed, wanted = armed_test_set(dataset, p)
    return {"clean_accuracy": float((logits.argmax(1) == dataset.y_test).mean()),
            "attack_success_rate": float((predict(x_armed).argmax(1) == wanted).mean())}


def _torch_predict(model):
    from dlforge.train.loop import predict_logits

    return lambda x: predict_logits(model, x, batch_size=1024).numpy()


def run_poison(model: str, out_dir: str | os.PathLike, options: PoisonOptions | None = None, *, force: bool = False,
               on_stage: Callable[[str], None] = lambda s: None, **overrides) -> dict:
    """Run the poisoning experiment into ``out_dir/{baseline,checkpoint,onnx,engine-ort-*}`` and return the
    report (written as ``out_dir/poison`` by the caller). Everything is validated before anything is written."""
    from dlforge_models import get_entry

    o = PoisonOptions.build(options, **overrides)
    get_entry(model)
    out = Path(out_dir)
    for stage in ("baseline", "checkpoint", "onnx", "engine-ort-fp32", "engine-ort-int8", "poison"):
        check_output(out / stage, force=force)
    dataset = load_dataset(o.data, o.data_dir)
    poisoned, p = poison(dataset, attack=o.attack, mode=o.mode, rate=o.rate, target=o.target_class,
                         trigger_size=o.trigger_size, seed=o.seed)
    report: dict = {"schema_version": SCHEMA_VERSION, "env": environment(), "model": model, "data": dataset.name,
                    **p.describe(), "attack": o.attack, "settings": o.params()}
    train = dict(epochs=o.epochs, seed=o.seed, force=force, data=o.data, data_dir=o.data_dir)
    net, ckpt = _train_models(model, out, dataset, poisoned, p, train, report, o, on_stage)
    on_stage("export and build")
    engines = _deploy(ckpt, out, o, force, dataset, p, report)
    try:
        report["defences"] = _dataset_defences(model, net, poisoned, dataset, p, train, o, on_stage)
        if "strip" in o.defences:
            on_stage("defence: strip")
            report["defences"] += _strip(engines, dataset, p, o)
    finally:
        for e in engines.values():
            e.close()
    report["artifacts"] = {"checkpoint": str(ckpt.path), "onnx": str(out / "onnx"),
                           **({"baseline": str(out / "baseline")} if o.baseline else {})}
    return report


def _train_models(model, out, dataset, poisoned, p, train, report, o, on_stage):
    from dlforge.train import checkpoint_from_training, load_checkpoint

    if o.baseline:
        on_stage("train clean baseline")
        clean = checkpoint_from_training(model, out / "baseline", dataset=dataset, **train)
        report["baseline_clean_accuracy"] = clean.card.sections["metrics"]["test_accuracy"]
    on_stage(f"train on {o.attack}-poisoned data ({len(p.poisoned)} poisoned samples)")
    ckpt = checkpoint_from_training(model, out / "checkpoint", dataset=poisoned, **train)
    net, _ = load_checkpoint(ckpt)
    report.update(_rates(_torch_predict(net), dataset, p))
    if o.baseline:
        report["clean_accuracy_drop_vs_baseline"] = round(
            (report["baseline_clean_accuracy"] - report["clean_accuracy"]) * 100, 4)
    return net, ckpt


def _deploy(ckpt, out, o, force, dataset, p, report) -> dict:
    """Export and build fp32 and INT8 engines; measure clean accuracy and attack success on each."""
    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint
    from dlforge.runtime import open_deployed

    onnx = onnx_from_checkpoint(ckpt.path, out / "onnx", force=force, data=o.data, data_dir=o.data_dir,
                                dynamic_batch=o.dynamic_batch)
    engines, report["engines"] = {}, []
    for precision in ("fp32", "int8"):
        built = engine_from_onnx(onnx.path, out / f"engine-ort-{precision}", precision=precision, force=force,
                                 data_dir=o.data_dir, max_batch=o.max_batch)
        engine = engines[precision] = open_deployed(built)
        report["engines"].append({"precision": precision, "path": str(built.path), **_rates(engine.predict, dataset, p)})
    return engines


def _dataset_defences(model, net, poisoned, dataset, p, train, o, on_stage) -> list[dict]:
    """Each dataset defence flags training samples; scored against the true poisons, then the model is
    retrained without the flagged samples and the attack measured again."""
    from dlforge.adversarial.poisoning.defences import (DATASET_DEFENCES, detection_rates, penultimate,
                                                        per_class_rates)
    from dlforge.train import checkpoint_from_training, load_checkpoint

    names = [d for d in o.defences if d in DATASET_DEFENCES]
    if not names:
        return []
    features = penultimate(net, poisoned.x_train)
    out = []
    for name in names:
        on_stage(f"defence: {name}")
        flagged, details = DATASET_DEFENCES.get(name)().flag(features, poisoned.x_train, poisoned.y_train,
                                                              expected_poisons=len(p.poisoned), seed=o.seed)
        entry = {"name": name, **detection_rates(flagged, p.poisoned),
                 "per_class": per_class_rates(flagged, p.poisoned, poisoned.y_train), "details": details}
        cleaned = dataclasses.replace(poisoned, x_train=poisoned.x_train[~flagged], y_train=poisoned.y_train[~flagged])
        with tempfile.TemporaryDirectory(prefix="dlforge-retrain-") as tmp:
            retrained = checkpoint_from_training(model, Path(tmp) / "ckpt", dataset=cleaned, **{**train, "force": False})
            after = _rates(_torch_predict(load_checkpoint(retrained)[0]), dataset, p)
        entry.update(asr_after=after["attack_success_rate"], clean_accuracy_after=after["clean_accuracy"])
        out.append(entry)
    return out


def _strip(engines: dict, dataset, p, o) -> list[dict]:
    """STRIP on each engine: threshold from clean test images, scored on clean and triggered ones."""
    from dlforge.adversarial.poisoning.defences import strip_detection, strip_entropy

    n = min(o.strip_samples, len(dataset.y_test) // 2)
    if n < 10:
        raise InputError(f"STRIP needs at least 20 test images; {dataset.name} has {len(dataset.y_test)}")
    overlays = dataset.x_test[-n:]
    x_armed, _ = armed_test_set(dataset, p)
    out = []
    for precision, engine in engines.items():
        clean_h = strip_entropy(engine.predict, dataset.x_test[:n], overlays, seed=o.seed)
        armed_h = strip_entropy(engine.predict, x_armed[:n], overlays, seed=o.seed + 1)
        out.append({"name": "strip", "engine": precision, **strip_detection(clean_h, armed_h, o.strip_fpr),
                    "samples": n})
    return out
