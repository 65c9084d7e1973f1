"""``run_poison``: poison a training set, train and deploy the model as usual, measure the attack on
PyTorch and on every engine precision, and run each defence on each engine.

Attack metrics are BackdoorBench's (Wu et al., NeurIPS 2022 Datasets and Benchmarks; its
``utils/metric.py``): clean accuracy (C-Acc), attack success rate (ASR: triggered inputs classified
as the attacker wants) and robust accuracy (R-Acc: triggered inputs still classified as their true
label). The differential audit runs every defence on the fp32 and on the INT8 engine (activation
clustering and spectral signatures on the engine's own last-hidden-layer activations, STRIP on its
outputs) and says whether detection survives quantization.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.adversarial.poisoning.attacks import ATTACKS, MODES, armed_test_set, poison
from dlforge.adversarial.poisoning.availability import (
    AVAILABILITY_ATTACKS,
    DEFAULT_RATES,
)
from dlforge.adversarial.poisoning.records import AvailabilityReport, BackdoorReport, PoisonReport
from dlforge.artifact import check_output
from dlforge.data import load_dataset
from dlforge.env import environment
from dlforge.errors import InputError
from dlforge.options import Options, option
from dlforge.progress import ProgressLike, as_progress

SURVIVAL_POINTS = 0.10  # INT8 detection within 10 points of fp32's
EFFECTIVE = 0.5  # below this fp32 detection rate there is nothing for INT8 to keep
SURVIVAL_CRITERION = (f"INT8 detection (TPR; STRIP: 1 - FAR) within {SURVIVAL_POINTS * 100:g} points of fp32's; "
                      f"not judged where fp32 detects under {EFFECTIVE:.0%}")


BACKDOOR_DEFAULT_DEFENCES = ("activation-clustering", "spectral-signatures", "strip")


def _defence_names() -> tuple[str, ...]:
    from dlforge.adversarial.poisoning.defences import DATASET_DEFENCES

    return (*DATASET_DEFENCES.names(), "strip", "loss-filter")


def _reductions() -> tuple[str, ...]:
    from dlforge.adversarial.poisoning.defences import REDUCTIONS

    return REDUCTIONS


def _analyses() -> tuple[str, ...]:
    from dlforge.adversarial.poisoning.defences import AC_ANALYSES

    return AC_ANALYSES


SS_DEFAULT_EPS = 0.33  # ART's SpectralSignatureDefense(expected_pp_poison=0.33): a bound, not the true rate


@dataclass
class PoisonOptions(Options):
    data: str = option("digits", "digits, mnist, fashion-mnist, or a .npz file with x and y.", nonempty=True)
    data_dir: str | None = option(None, "Directory of the IDX files (MNIST, Fashion-MNIST).")
    attack: str = option("badnets", "Poisoning attack: a backdoor or label flip (badnets, label-flip; one --rate) or "
                                    "availability poisoning (random-label, boundary-flip; a curve over --rates).",
                         choices=ATTACKS + AVAILABILITY_ATTACKS)
    mode: str = option("single", "BadNets: every class to --target-class, or class i to i+1.", choices=MODES)
    rate: float = option(0.1, "Backdoors and label flips: fraction of training samples poisoned.",
                         min=0, max=1, min_open=True, max_open=True)
    rates: str = option(DEFAULT_RATES, "Availability attacks: injection rates (added samples per clean training "
                                       "sample), separated by '/'.", nonempty=True)
    reference: bool = option(True, "Availability attacks: also draw the random-label curve at the same rates.")
    filter_share: float | None = option(None, "Loss filter: share of the poisoned training set it removes (default: "
                                              "samples whose loss exceeds the 99th percentile of the clean validation "
                                              "set's, which needs no knowledge of the poisoned share).",
                                        min=0, max=1, max_open=True)
    target_class: int = option(0, "Class the backdoor or the flipped labels point to.", min=0)
    trigger_size: int | None = option(None, "BadNets trigger side in pixels (default: width / 9, at least 2).", min=1)
    defences: tuple[str, ...] = option(BACKDOOR_DEFAULT_DEFENCES,
                                       "Defences to run on each engine (empty for none). Backdoors: "
                                       "activation-clustering, spectral-signatures, strip; availability attacks: "
                                       "loss-filter (their default).", choices=_defence_names)
    ac_reduce: str = option("pca", "Activation clustering's reduction to 10 dimensions (pca: ART's default, "
                                   "deterministic; ica: Chen et al.'s choice).", choices=_reductions)
    ac_analysis: str = option("relative-size", "Activation clustering's analysis whose flags are removed (both are "
                                               "reported).", choices=_analyses)
    ss_eps: float = option(SS_DEFAULT_EPS, "Spectral signatures' eps, the defender's bound on the poisoned "
                                           "fraction; 1.5*eps of each class is removed (default: ART's "
                                           "expected_pp_poison, 0.33; the true --rate would be an oracle).",
                           min=0, max=1, min_open=True, max_open=True)
    strip_fpr: float = option(0.01, "STRIP's preset false-rejection rate (clean inputs rejected), which sets its "
                                    "entropy boundary.", min=0, max=1, min_open=True, max_open=True)
    strip_samples: int = option(500, "Test images in each of STRIP's four disjoint sets (blending pool, boundary, "
                                     "clean, triggered).", min=1)
    strip_copies: int = option(100, "Blends per input for STRIP's entropy (Gao et al.'s N).", min=1)
    retrain: bool = option(True, "Retrain without each training-set defence's fp32-engine flags and measure again.")
    epochs: int | None = option(None, "Training epochs (default: the model's).", min=1)
    seed: int = option(0, "Seed of the poisoning and the training.", min=0)
    baseline: bool = option(True, "Also train the clean model for comparison.")
    dynamic_batch: bool = option(True, "Export the batch dimension as dynamic, or fixed at 1.")
    max_batch: int | None = option(None, "Largest batch the engines accept (their batch range).", min=1)


def attack_rates(predict, dataset, p) -> dict:
    """C-Acc on the clean test set; ASR and R-Acc on its triggered images of other classes."""
    x_armed, wanted, true = armed_test_set(dataset, p)
    armed = predict(x_armed).argmax(1)
    return {"clean_accuracy": _accuracy(predict, dataset),
            "attack_success_rate": float((armed == wanted).mean()), "robust_accuracy": float((armed == true).mean())}


def _accuracy(predict, dataset) -> float:
    """Clean accuracy on the test split."""
    return float((predict(dataset.x_test).argmax(1) == dataset.y_test).mean())


def _trained_without(model: str, poisoned, keep: np.ndarray, train: dict):
    """The PyTorch model retrained on the training samples ``keep`` selects (in a temporary checkpoint)."""
    from dlforge.train import checkpoint_from_training, load_checkpoint

    cleaned = dataclasses.replace(poisoned, x_train=poisoned.x_train[keep], y_train=poisoned.y_train[keep])
    with tempfile.TemporaryDirectory(prefix="dlforge-retrain-") as tmp:
        retrained = checkpoint_from_training(model, Path(tmp) / "ckpt", dataset=cleaned, **{**train, "force": False})
        return load_checkpoint(retrained)[0]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of two flag masks (intersection over union; two empty masks agree)."""
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


def _torch_predict(model):
    from dlforge.train.loop import predict_logits

    return lambda x: predict_logits(model, x, batch_size=1024).numpy()


def run_poison(model: str, out_dir: str | os.PathLike, options: PoisonOptions | None = None, *, force: bool = False,
               progress: ProgressLike = None, **overrides) -> PoisonReport:
    """Run the poisoning experiment into ``out_dir/{baseline,checkpoint,onnx,engine-ort-*}`` and return its
    report (a :class:`BackdoorReport`, or an :class:`AvailabilityReport` for the availability attacks; written as
    ``out_dir/poison`` by the caller). Everything is validated before anything is written."""
    from dlforge_models import get_entry

    from dlforge.adversarial.poisoning.defences import published

    o = PoisonOptions.build(options, **overrides)
    on_stage = as_progress(progress).stage
    if get_entry(model).task != "classification":
        raise InputError(f"poisoning attacks flip or plant labels: {model} is a {get_entry(model).task} model, not a "
                         "classifier; poison a classifier (e.g. lenet)")
    if o.attack in AVAILABILITY_ATTACKS:
        return run_availability(model, out_dir, o, force=force, progress=progress)
    if "loss-filter" in o.defences:
        raise InputError("--defences loss-filter is for the availability attacks (random-label, boundary-flip); "
                         f"{o.attack} takes {', '.join(BACKDOOR_DEFAULT_DEFENCES)}")
    out = Path(out_dir)
    for stage in ("baseline", "checkpoint", *_DEPLOYED, "poison"):
        check_output(out / stage, force=force)
    dataset = load_dataset(o.data, o.data_dir)
    poisoned, p = poison(dataset, attack=o.attack, mode=o.mode, rate=o.rate, target=o.target_class,
                         trigger_size=o.trigger_size, seed=o.seed)
    sets = _strip_sets(dataset, o) if "strip" in o.defences else None
    cited = {name: published(name) for name in o.defences}  # before any training: an unknown defence fails here
    train = dict(epochs=o.epochs, seed=o.seed, force=force, data=o.data, data_dir=o.data_dir)
    baseline, rates, artifacts = _train_models(model, out, dataset, poisoned, p, train, o, on_stage)
    on_stage("export and build")
    engines, engine_rows = _deploy(artifacts["checkpoint"], out, o, force, dataset, p)
    try:
        defences, masks = _dataset_defences(engines, poisoned, p, o, on_stage)
        if "strip" in o.defences:
            defences += _strip(engines, dataset, p, sets, o, on_stage)
    finally:
        for e in engines.values():
            e.close()
    if o.retrain:
        _retrain(model, defences, masks, poisoned, dataset, p, train, rates, on_stage)
    return BackdoorReport(
        env=environment(), model=model, data=dataset.name, **{**p.describe(), "attack": o.attack},
        settings=o.params(), **rates, artifacts=artifacts, engines=engine_rows, defences=defences,
        differential=differential(defences, masks), survival_criterion=SURVIVAL_CRITERION, published=cited,
        baseline_clean_accuracy=baseline, clean_accuracy_drop_vs_baseline=None if baseline is None else round(
            (baseline - rates["clean_accuracy"]) * 100, 4))


def _train_models(model, out, dataset, poisoned, p, train, o, on_stage) -> tuple[float | None, dict, dict]:
    """The clean baseline (where asked for) and the poisoned model: the baseline's clean accuracy, the poisoned
    PyTorch model's C-Acc, ASR and R-Acc, and the artifacts' paths."""
    from dlforge.train import checkpoint_from_training, load_checkpoint

    baseline = None
    if o.baseline:
        on_stage("train clean baseline")
        clean = checkpoint_from_training(model, out / "baseline", dataset=dataset, **train)
        baseline = clean.card.sections["metrics"]["test_accuracy"]
    on_stage(f"train on {o.attack}-poisoned data ({len(p.poisoned)} poisoned samples)")
    ckpt = checkpoint_from_training(model, out / "checkpoint", dataset=poisoned, **train)
    rates = attack_rates(_torch_predict(load_checkpoint(ckpt)[0]), dataset, p)
    artifacts = {"checkpoint": str(ckpt.path), "onnx": str(out / "onnx"),
                 **({"baseline": str(out / "baseline")} if o.baseline else {})}
    return baseline, rates, artifacts


PRECISIONS = ("fp32", "int8")
_DEPLOYED = ("onnx", *(f"engine-ort-{p}" for p in PRECISIONS))


def _build_engines(ckpt, out: Path, o, force) -> tuple[dict, dict]:
    """Export ``ckpt`` to ``out/onnx`` and build ``out/engine-ort-{fp32,int8}``; the open engines and their
    artifact paths, by precision."""
    from dlforge.build import engine_from_onnx
    from dlforge.export import onnx_from_checkpoint
    from dlforge.runtime import open_deployed

    onnx = onnx_from_checkpoint(ckpt, out / "onnx", force=force, data=o.data, data_dir=o.data_dir,
                                dynamic_batch=o.dynamic_batch)
    engines, paths = {}, {}
    try:
        for precision in PRECISIONS:
            built = engine_from_onnx(onnx.path, out / f"engine-ort-{precision}", precision=precision, force=force,
                                     data_dir=o.data_dir, max_batch=o.max_batch)
            engines[precision], paths[precision] = open_deployed(built), str(built.path)
    except BaseException:
        for e in engines.values():
            e.close()
        raise
    return engines, paths


def _deploy(ckpt, out, o, force, dataset, p) -> tuple[dict, list[dict]]:
    """Export and build fp32 and INT8 engines; the open engines, and C-Acc, ASR and R-Acc on each."""
    engines, paths = _build_engines(ckpt, out, o, force)
    try:
        rows = [{"precision": precision, "path": paths[precision], **attack_rates(engine.predict, dataset, p)}
                for precision, engine in engines.items()]
    except BaseException:
        for e in engines.values():
            e.close()
        raise
    return engines, rows


def _dataset_defences(engines, poisoned, p, o, on_stage) -> tuple[list[dict], dict]:
    """Each training-set defence on each engine's last-hidden-layer activations of the poisoned
    training set, scored against the true poisoned indices. Returns the entries and their masks
    by ``(defence, engine)``."""
    from dlforge.adversarial.poisoning.defences import (
        DATASET_DEFENCES,
        detection_rates,
        per_class_rates,
    )
    from dlforge.adversarial.poisoning.features import engine_features

    names = [d for d in o.defences if d in DATASET_DEFENCES]
    settings = {"activation-clustering": dict(reduce=o.ac_reduce, analysis=o.ac_analysis, seed=o.seed),
                "spectral-signatures": dict(eps=o.ss_eps)}
    out, masks = [], {}
    if not names:
        return out, masks
    for precision, engine in engines.items():
        on_stage(f"last-hidden-layer activations of the {len(poisoned.y_train)} training samples on {precision}")
        features = engine_features(engine, poisoned.x_train)
        for name in names:
            on_stage(f"defence: {name} ({precision})")
            defence = DATASET_DEFENCES.get(name)(**settings.get(name, {}))
            flags = defence.flag(features, poisoned.y_train)
            masks[name, precision] = flags.flagged
            entry = {"name": name, "engine": precision, "settings": defence.settings(),
                     **({"oracle": _oracle_note(o)} if name == "spectral-signatures" and o.ss_eps == o.rate else {}),
                     **detection_rates(flags.flagged, p.poisoned),
                     "per_class": per_class_rates(flags.flagged, p.poisoned, poisoned.y_train),
                     "details": flags.details}
            if flags.cluster is not None:  # did the clustering separate the poison, whatever was flagged?
                truth = np.isin(np.arange(len(flags.cluster)), p.poisoned)
                for row in entry["per_class"]:
                    in_class = poisoned.y_train == row["class"]
                    row["poisoned_per_cluster"] = [int((truth & in_class & (flags.cluster == k)).sum()) for k in (0, 1)]
            if flags.by_analysis:
                entry["by_analysis"] = {a: {k: v for k, v in detection_rates(m, p.poisoned).items()
                                            if k in ("true_positive_rate", "false_positive_rate", "flagged")}
                                        for a, m in flags.by_analysis.items()}
            out.append(entry)
    return out, masks


def _retrain(model, defences, masks, poisoned, dataset, p, train, rates, on_stage) -> None:
    """Retrain without each training-set defence's fp32-engine flags; C-Acc, ASR and R-Acc of the result.
    A defence that flagged nothing leaves the data, and so the (seeded) model, as they were."""
    for entry in defences:
        if entry["engine"] != "fp32" or (entry["name"], "fp32") not in masks:
            continue
        keep = ~masks[entry["name"], "fp32"]
        if keep.all():
            entry.update({f"{k}_after": v for k, v in rates.items()})
            continue
        on_stage(f"retrain without the {int((~keep).sum())} samples {entry['name']} flagged")
        after = attack_rates(_torch_predict(_trained_without(model, poisoned, keep, train)), dataset, p)
        entry.update({f"{k}_after": v for k, v in after.items()})


def _strip_sets(dataset, o) -> dict[str, np.ndarray]:
    """STRIP's four disjoint sets of test indices (:func:`~.defences.strip_sets`), as large as the test set allows."""
    from dlforge.adversarial.poisoning.defences import strip_sets

    size = min(o.strip_samples, len(dataset.y_test) // 4)
    return strip_sets(dataset.y_test, size=size, target=o.target_class if o.mode == "single" else None, seed=o.seed)


def _strip(engines: dict, dataset, p, sets, o, on_stage) -> list[dict]:
    """STRIP on each engine's outputs: the blending pool, the boundary set and the clean and triggered
    images FRR and FAR are measured on are four disjoint sets of test images."""
    from dlforge.adversarial.poisoning.attacks import stamp
    from dlforge.adversarial.poisoning.defences import (
        strip_boundary,
        strip_entropy,
        strip_rates,
    )

    x = dataset.x_test
    overlays, held_out, clean = x[sets["overlays"]], x[sets["threshold"]], x[sets["clean"]]
    triggered = stamp(x[sets["triggered"]], p.trigger_size) if o.attack == "badnets" else x[sets["triggered"]]
    out = []
    for precision, engine in engines.items():
        on_stage(f"defence: strip ({precision})")
        entropy = {name: strip_entropy(engine.predict, images, overlays, copies=o.strip_copies, seed=o.seed + i)
                   for i, (name, images) in enumerate((("threshold", held_out), ("clean", clean),
                                                       ("triggered", triggered)))}
        boundary = strip_boundary(entropy["threshold"], o.strip_fpr)
        out.append({"name": "strip", "engine": precision, "preset_false_rejection_rate": o.strip_fpr,
                    "boundary": boundary, **strip_rates(boundary, entropy["clean"], entropy["triggered"]),
                    "clean_entropy_mean": float(entropy["threshold"].mean()),
                    "clean_entropy_std": float(entropy["threshold"].std(ddof=1)),
                    "triggered_entropy_mean": float(entropy["triggered"].mean()), "copies": o.strip_copies,
                    "set_sizes": {k: int(len(v)) for k, v in sets.items()}})
    return out


def differential(defences: list[dict], masks: dict) -> list[dict]:
    """Each defence's detection on fp32 against INT8, judged by :data:`SURVIVAL_CRITERION`."""
    out = []
    for name in dict.fromkeys(d["name"] for d in defences):
        rows = {d["engine"]: d for d in defences if d["name"] == name}
        if not {"fp32", "int8"} <= rows.keys():
            continue
        metric = "detection_rate" if name == "strip" else "true_positive_rate"
        fp32, int8 = rows["fp32"][metric], rows["int8"][metric]
        entry = {"defence": name, "metric": metric, "fp32": fp32, "int8": int8, "change": int8 - fp32,
                 "survives": None if fp32 < EFFECTIVE else bool(int8 >= fp32 - SURVIVAL_POINTS)}
        if (name, "fp32") in masks:
            entry["flag_agreement"] = _jaccard(masks[name, "fp32"], masks[name, "int8"])
        out.append(entry)
    return out


def run_availability(model: str, out_dir: str | os.PathLike, o: PoisonOptions, *, force: bool = False,
                     progress: ProgressLike = None) -> AvailabilityReport:
    """Availability poisoning (:mod:`~.availability`): the clean model and one poisoned model per attack and
    rate, each deployed as fp32 and INT8 engines, clean accuracy on each; the loss filter on each engine
    and a retraining without the fp32 engine's flags. Layout: ``out_dir/clean/...``,
    ``out_dir/{attack}-{rate}/{checkpoint,onnx,engine-ort-fp32,engine-ort-int8}``, the report in
    ``out_dir/poison`` (written by the caller)."""
    from dlforge.adversarial.poisoning.availability import inject, parse_rates

    on_stage = as_progress(progress).stage
    from dlforge.train import checkpoint_from_training, load_checkpoint
    from dlforge.train.loop import predict_logits

    rates = parse_rates(o.rates)
    defences = ("loss-filter",) if o.defences == BACKDOOR_DEFAULT_DEFENCES else o.defences
    wrong = [d for d in defences if d != "loss-filter"]
    if wrong:
        raise InputError(f"--defences {','.join(wrong)} is a backdoor defence; availability attacks take "
                         "--defences loss-filter (or '' for none)")
    attacks = [o.attack] + (["random-label"] if o.reference and o.attack != "random-label" else [])
    out = Path(out_dir)
    runs = [("clean", None, out / "clean")] + [(a, r, out / f"{a}-{r:g}") for a in attacks for r in rates]
    for _, _, folder in runs:
        for stage in ("checkpoint", *_DEPLOYED):
            check_output(folder / stage, force=force)
    check_output(out / "poison", force=force)
    dataset = load_dataset(o.data, o.data_dir)
    train = dict(epochs=o.epochs, seed=o.seed, force=force, data=o.data, data_dir=o.data_dir)
    curve: list[dict] = []
    surrogate = None
    for attack, rate, folder in runs:
        if rate is None:
            on_stage("train the clean model (rate 0; the boundary-flip attacker's surrogate)")
            poisoned, injection = dataset, None
        else:
            poisoned, injection = inject(dataset, attack, rate, seed=o.seed, surrogate_logits=surrogate)
            on_stage(f"train on {attack} at rate {rate:g} ({len(injection.source)} injected samples)")
        ckpt = checkpoint_from_training(model, folder / "checkpoint", dataset=poisoned, **train)
        net = load_checkpoint(ckpt)[0]
        if rate is None:
            surrogate = predict_logits(net, dataset.x_train, batch_size=1024).numpy()
        row = {"attack": attack, "rate": rate or 0.0, "checkpoint": str(ckpt.path),
               **(injection.describe() if injection else {"injected_samples": 0, "poisoned_share": 0.0}),
               "pytorch": _accuracy(_torch_predict(net), dataset)}
        on_stage(f"export and build {folder.name}")
        engines, row["engines"] = _build_engines(ckpt, folder, o, force)
        try:
            row.update({precision: _accuracy(e.predict, dataset) for precision, e in engines.items()})
            if injection is not None and "loss-filter" in defences:
                row["loss_filter"], flagged = _loss_filter(engines, poisoned, injection, o, on_stage)
        finally:
            for e in engines.values():
                e.close()
        if injection is not None and "loss-filter" in defences and o.retrain:
            row["loss_filter"]["accuracy_after"] = _retrain_filtered(model, flagged, poisoned, dataset, train,
                                                                     on_stage)
        curve.append(row)
    return AvailabilityReport(
        env=environment(), model=model, data=dataset.name, attack=o.attack, attacks=attacks, rates=list(rates),
        clean_samples=int(len(dataset.y_train)), defences=list(defences), settings=o.params(), curve=curve,
        artifacts={"checkpoint": curve[0]["checkpoint"], "runs": str(out)}, clean_accuracy=curve[0]["fp32"],
        lowest_accuracy=min(r["fp32"] for r in curve), summary=availability_summary(curve, o.attack))


def _loss_filter(engines, poisoned, injection, o, on_stage) -> tuple[dict, np.ndarray]:
    """The loss filter on each engine: flag the training samples whose loss is above the clean validation
    set's 99th percentile (or, with ``--filter-share``, the highest-loss share). Returns the report entry
    and the fp32 engine's flags."""
    from dlforge.adversarial.poisoning.availability import (
        VALIDATION_QUANTILE,
        loss_filter,
        loss_threshold,
        sample_losses,
    )
    from dlforge.adversarial.poisoning.defences import detection_rates

    poisoned_share = injection.describe()["poisoned_share"]
    if o.filter_share is None:
        out = {"rule": f"loss above the {VALIDATION_QUANTILE:.0%} quantile of the clean validation set's", "engines": {}}
    else:
        out = {"rule": "fixed share", "share": o.filter_share, "engines": {},
               **({"oracle": "the share given is the true poisoned share, which a defender does not know"}
                  if abs(o.filter_share - poisoned_share) < 5e-4 else {})}
    masks = {}
    for precision, engine in engines.items():
        losses = sample_losses(engine.predict(poisoned.x_train), poisoned.y_train)
        if o.filter_share is None:
            bar = loss_threshold(sample_losses(engine.predict(poisoned.x_val), poisoned.y_val))
            on_stage(f"defence: loss-filter ({precision}, removes losses above {bar:.3f})")
            masks[precision] = losses > bar
            rates = {"threshold": bar, "share": float(masks[precision].mean())}
        else:
            on_stage(f"defence: loss-filter ({precision}, removes {o.filter_share:.3f} of the training set)")
            masks[precision], rates = loss_filter(losses, o.filter_share), {}
        out["engines"][precision] = {**detection_rates(masks[precision], injection.poisoned), **rates}
    out.setdefault("share", out["engines"]["fp32"]["share"])
    out["flag_agreement"] = _jaccard(masks["fp32"], masks["int8"])
    return out, masks["fp32"]


def _oracle_note(o) -> str:
    return (f"--ss-eps {o.ss_eps:g} is the true poisoning rate: an oracle unless the defender knew it "
            f"(the default bound is {SS_DEFAULT_EPS})")


def _retrain_filtered(model, flagged, poisoned, dataset, train, on_stage) -> float:
    """Retrain without the fp32 engine's loss-filter flags; the clean accuracy of the result (PyTorch)."""
    on_stage(f"retrain without the {int(flagged.sum())} samples the loss filter flagged")
    return _accuracy(_torch_predict(_trained_without(model, poisoned, ~flagged, train)), dataset)


def availability_summary(curve: list[dict], attack: str) -> dict:
    """Per rate, the attack's fp32-engine accuracy against random labels' (where both were run), and
    whether the attack degrades more at every rate."""
    by = {(r["attack"], r["rate"]): r for r in curve}
    rows = [{"rate": rate, "attack": by[attack, rate]["fp32"], "random_label": by["random-label", rate]["fp32"]}
            for (a, rate) in by if a == attack and ("random-label", rate) in by and attack != "random-label"]
    return {"compared": rows, "below_random_at_every_rate": all(r["attack"] < r["random_label"] for r in rows)
            if rows else None}
