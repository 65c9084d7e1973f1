"""``run_audit``: attack what is deployed, judge every result the same way, and check the evaluation.

Routes, as the report names them:

- *white-box*: crafted with the PyTorch source's gradients, measured on the source;
- *transfer*: the same examples (or a surrogate's), measured on each engine;
- *white-box (engine)*: crafted with the gradients of each engine's own graph (its ONNX made
  differentiable, straight-through through INT8 quantization: :mod:`dlforge.adversarial.engine_graph`),
  measured on that engine. The *transfer gap* (transfer minus engine white-box robust accuracy)
  says how much a transfer-only audit would overstate the engine's robustness;
- *query*: query-only attacks run against each engine itself, no gradients needed.

Every attack is called one way (``attack.craft(target, ...)``, :mod:`dlforge.adversarial.attacks.base`); what
it ``requires`` decides only where it runs: one that needs gradients on the source and on each engine's graph,
a query-only one on each engine. Probes (:mod:`dlforge.adversarial.probes`, their own registry, named in the
same ``--attacks`` spec: fooling images, out-of-distribution confidence, the substitute-model attack) run
once each, beside the attacks, and write their own report sections.

The audit, not the attack, projects every candidate onto the eps-ball and the valid range before
judging it, and measures clean accuracy on exactly the same inputs. Attacks and detectors come
from their registries (:data:`~dlforge.adversarial.attacks.ATTACKS`,
:data:`~dlforge.adversarial.detectors.DETECTORS`); checks (:mod:`dlforge.adversarial.checks`) say
``n/a`` when they have nothing to judge.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dlforge.adversarial import checks
from dlforge.adversarial.attacks import GRADIENTS, Attack, GradientAttack, Target
from dlforge.adversarial.probes import Probe
from dlforge.adversarial.attacks.projection import project
from dlforge.adversarial.attacks.robust import outcome_rates
from dlforge.adversarial.audit_options import DEFAULT_EPS, DEFAULT_EPS_L2, AuditOptions, for_modality
from dlforge.adversarial.invariance import audit_invariance, invariance_check
from dlforge.adversarial.records import QUERY, TRANSFER, WHITE_BOX, AdversarialKey, AuditReport
from dlforge.adversarial.samples import SAMPLES_FILE, SAMPLES_VERSION, add_row
from dlforge.artifact import Artifact, open_artifact
from dlforge.env import environment
from dlforge.errors import InputError
from dlforge.progress import ProgressLike, as_progress
from dlforge.runtime.deployed import DeployedModel, open_deployed

ENGINE_ROUTE = checks.ENGINE_ROUTE


@dataclass
class AuditRun:
    """The state of one audit while it runs: engines, data, the crafting model, results so far."""

    options: AuditOptions
    engines: list[DeployedModel]
    x: np.ndarray
    y: np.ndarray
    dataset: object
    attacks: list[Attack] = field(default_factory=list)  # built once from options.attacks
    model: object | None = None  # TorchModel crafting gradient attacks
    graphs: list = field(default_factory=list)  # EngineGraph per engine (white-box (engine) route)
    crafter: Artifact | None = None
    crafted_on: str | None = None
    clean: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    adv: dict[AdversarialKey, np.ndarray] = field(default_factory=dict)
    probes: dict = field(default_factory=dict)  # a probe's name -> its report section
    samples: list = field(default_factory=list)  # per-sample records (options.per_sample)
    warm: dict | None = None  # kept open across audits by the caller (run_audit's ``warm``)
    cache: dict = field(default_factory=dict)  # what probes share (the resemblance yardstick)

    @property
    def value_range(self) -> tuple[float, float]:
        return self.engines[0].value_range

    def held_out(self, limit: int | None = None) -> np.ndarray:
        """Test images outside the audited slice ``[start, start + samples)`` (up to ``limit``), for what must be
        measured on data disjoint from the audited points: detector thresholds, the resemblance yardstick."""
        test = self.dataset.x_test
        start = self.options.start
        rest = np.concatenate([test[start + len(self.y):], test[:start]]) if start else test[len(self.y):]
        return (rest if limit is None else rest[:limit]).astype(np.float32)


def run_audit(targets: list[str | os.PathLike], options: AuditOptions | None = None, *,
              progress: ProgressLike = None, warm: dict | None = None, engine_threads: int | None = None,
              **overrides) -> AuditReport:
    """Audit the robustness of one or more engines of one model; returns its :class:`AuditReport`.

    ``options`` (:class:`AuditOptions`) or keyword ``overrides`` set what to run. Detectors are
    evaluated on each engine: threshold at 5% FPR on held-out clean images, then the share of
    *successful* adversarial examples flagged. ``warm``: a dict the caller keeps across audits (a
    sweep's worker): engines and the source model are opened once, kept there, and not closed.
    ``engine_threads``: intra-op threads of the engines it opens (default: the runtime's choice).
    """
    options = AuditOptions.build(options, **overrides)
    if not targets:
        raise InputError("give at least one engine to audit")
    engines = _open_engines(targets, warm, engine_threads)
    try:
        options = for_modality(options, engines[0].info)
        run = _prepare(engines, options, warm)
        with as_progress(progress).bar(_work(run), "audit", unit="run") as bar:
            for spec, attack in zip(options.attacks, run.attacks):
                _run_attack(run, attack, bar, spec)
            full = _full_range(run, bar)
            if options.detectors:
                from dlforge.adversarial.evidence import detections

                run.cache["detections"] = detections(run, bar=bar)
        report = _report(run, full)
        info = engines[0].info
        if info is not None and info.is_audio:
            report.audio = dict(info.audio)
        return report
    finally:
        for e in engines:
            if warm is None:
                e.close()


def _kept(warm: dict | None, key: tuple, make: Callable):
    """``make()``, or what ``warm`` (run_audit's cache) already holds for ``key``; kept there when given."""
    if warm is None:
        return make()
    if key not in warm:
        warm[key] = make()
    return warm[key]


def _open_engines(targets, warm: dict | None = None, threads: int | None = None) -> list[DeployedModel]:
    engines: list[DeployedModel] = []
    try:
        for t in targets:
            engines.append(_kept(warm, ("engine", str(Path(t).resolve()), threads),
                                 lambda t=t: open_deployed(t, threads=threads)))
            _check_classifier(engines[-1])
    except BaseException:
        for e in engines:
            if warm is None:
                e.close()
        raise
    labels = [e.label for e in engines]
    if len(set(labels)) < len(labels):  # runs/a/engine and runs/b/engine: add the parent folder
        for e in engines:
            e.name = "/".join(e.path.parts[-2:])
    if any(e.value_range != engines[0].value_range for e in engines):
        raise InputError("the engines declare different input value ranges; audit them separately")
    return engines


def _check_classifier(engine: DeployedModel) -> None:
    out = engine.session.outputs[0]
    if engine.task not in (None, "classification"):
        raise InputError(f"{engine.path} is a {engine.task} model; dlforge audit measures classifiers (robust "
                         "accuracy needs class labels); use it as an input filter: --detectors autoencoder=DIR")
    if len(out.shape) != 2 or len(engine.input_shape) < 1:
        raise InputError(f"{engine.path} outputs {out} — not (batch, classes) logits; dlforge audit attacks "
                         "classifiers whose first output is one score per class")


def _crafting_model(engines: list[DeployedModel], options: AuditOptions) -> tuple[Artifact | None, str | None]:
    """The checkpoint gradient attacks are crafted on, and how it relates to the engines."""
    if options.source or options.surrogate:
        ckpt = open_artifact(options.source or options.surrogate, ["checkpoint"])
        if options.source:
            for e in engines:
                _check_source(ckpt, e)
        return ckpt, "source" if options.source else "surrogate"
    own = engines[0].source_checkpoint()
    if own is not None:
        for e in engines[1:]:
            _check_source(own, e)
    return own, "source" if own is not None else None


def _check_source(source: Artifact, engine: DeployedModel) -> None:
    """``source`` must be the checkpoint the engine was built from (a different model is a surrogate)."""
    own = engine.source_checkpoint()
    if own is not None and own.card.sha256 != source.card.sha256:
        raise InputError(f"{source.path} is not the checkpoint {engine.path} was built from ({own.path}); pass that "
                         "one as --source, or use --surrogate for a transfer attack from another model")
    a, b = source.card.model, engine.info
    if own is None and a and b and (a.inputs[0].shape[1:], a.labels) != (b.inputs[0].shape[1:], b.labels):
        raise InputError(f"--source {source.path} is {a.name} {list(a.inputs[0].shape[1:])}, but {engine.path} takes "
                         f"{list(b.inputs[0].shape[1:])}; pass the engine's own checkpoint or use --surrogate")


def _audit_dataset(options: AuditOptions, engines: list[DeployedModel], crafter: Artifact | None):
    from dlforge.artifact import DatasetSpec, dataset_spec
    from dlforge.data import load_spec

    if options.data:  # an image folder is read at the engine's input shape
        info = engines[0].info
        return load_spec(DatasetSpec(options.data, options.data_dir).for_model(info))
    for found in [dataset_spec(crafter) if crafter else None, *(e.dataset_spec() for e in engines)]:
        if found:
            return load_spec(found._replace(data_dir=options.data_dir or found.data_dir))
    raise InputError("cannot tell which dataset to attack on: pass --data (and --data-dir), e.g. --data mnist "
                     "--data-dir ../shared/data/mnist")


def _prepare(engines: list[DeployedModel], options: AuditOptions, warm: dict | None = None) -> AuditRun:
    """Pick the crafting model, load the data, measure clean predictions; refuse what cannot be audited."""
    attacks = [options.attack(spec) for spec in options.attacks]
    gradient = [s for s, a in zip(options.attacks, attacks) if _needs_gradients(a)]
    crafter, crafted_on = _crafting_model(engines, options)
    if gradient and crafter is None and options.engine_gradients == "off":
        raise InputError(f"attacks {', '.join(gradient)} need gradients: pass --source CHECKPOINT (or --surrogate), "
                         "drop --engine-gradients off, or audit with query attacks only (--attacks square)")
    dataset = _kept(warm, ("data", options.data, options.data_dir, crafter.path if crafter else None,
                           *(e.path for e in engines)), lambda: _audit_dataset(options, engines, crafter))
    info = engines[0].info
    if info is not None and info.labels and not dataset.evaluation_only and tuple(dataset.labels) != tuple(info.labels):
        shown = ", ".join(dataset.labels[:5]) + (" ..." if len(dataset.labels) > 5 else "")
        raise InputError(f"dataset {dataset.name} has {len(dataset.labels)} classes ({shown}), but {engines[0].path} "
                         f"classifies {len(info.labels)} ({', '.join(info.labels[:5])}{' ...' if len(info.labels) > 5 else ''}); "
                         "pass the model's own --data, or a folder whose class folders are named after its labels")
    stop = options.start + options.samples
    x, y = dataset.x_test[options.start:stop].astype(np.float32), dataset.y_test[options.start:stop]
    if len(y) == 0:
        raise InputError(f"dataset {dataset.name} has {len(dataset.y_test)} test images: none from --start "
                         f"{options.start}")
    if x.shape[1:] != engines[0].input_shape:
        raise InputError(f"dataset {dataset.name} images are {x.shape[1:]}, the engine expects "
                         f"{engines[0].input_shape}; pass the right --data")
    run = AuditRun(options, engines, x, y, dataset, attacks, crafter=crafter, crafted_on=crafted_on, warm=warm)
    for e in engines:
        logits = e.predict(x, options.batch_size)
        _check_outputs(e, logits, y)
        run.clean[e.label] = logits.argmax(1)
    for attack in attacks:
        if isinstance(attack, Probe):
            attack.prepare(run)
    from dlforge.adversarial.detectors import detector_spec

    detectors = [detector_spec(spec)[0] for spec in options.detectors]
    if detectors:  # a detector that cannot be fitted here says so before any attack runs
        from dlforge.adversarial.evidence import check_held_out

        check_held_out(run)
    for cls in detectors:
        cls.check(run)
    crafting = options.adaptive or any(cls.needs_gradients for cls in detectors)
    if gradient or (crafting and (crafter is not None or options.engine_gradients != "off")):
        _gradient_models(run, gradient)  # the adaptive attacks craft on the same models
    return run


def _gradient_models(run: AuditRun, gradient: list[str]) -> None:
    """The source model (when there is one) and each engine's own differentiable graph."""
    from dlforge.adversarial.engine_graph import engine_graph, gradient_agreement, require_graphs
    from dlforge.train.checkpoint import attack_model

    o = run.options
    if run.crafter is not None:
        run.model = _kept(run.warm, ("source", str(run.crafter.path), o.device),
                          lambda: attack_model(run.crafter, o.device))
        run.clean["source"] = run.model.predict(run.x).argmax(1)
    if o.engine_gradients != "off":
        noise = min(max(o.eps), run.value_range[1] - run.value_range[0])
        run.graphs = [engine_graph(e, run.x, noise=noise, value_range=run.value_range, device=o.device, seed=o.seed)
                      for e in run.engines]
        if o.engine_gradients == "require":
            require_graphs(run.graphs)
        if run.model is not None and run.crafted_on == "source":
            for g in run.graphs:
                if g.model is not None:
                    g.gradients = gradient_agreement(run.model, g.model, run.x, run.y)
    if gradient and run.model is None and not any(g.model for g in run.graphs):
        reasons = "; ".join(g.reason for g in run.graphs)
        raise InputError(f"attacks {', '.join(gradient)} need gradients, but there is no PyTorch source and no engine "
                         f"graph could be differentiated ({reasons}); pass --source CHECKPOINT (or --surrogate), or "
                         "audit with query attacks only (--attacks square)")


def _check_outputs(engine: DeployedModel, logits: np.ndarray, y: np.ndarray) -> None:
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        raise InputError(f"{engine.path} outputs NaN or inf on {int(bad.sum())} of {len(bad)} test images; a model "
                         "with non-finite outputs cannot be audited (check its weights or its export)")
    if int(y.max()) >= logits.shape[1]:
        raise InputError(f"the dataset has labels up to {int(y.max())}, but {engine.path} scores only "
                         f"{logits.shape[1]} classes: pass the model's own --data")


def _work(run: AuditRun) -> int:
    total = 0
    graphs = sum(1 for g in run.graphs if g.model is not None)
    for attack in run.attacks:
        if isinstance(attack, Probe):
            total += 1
            continue
        per_eps = (int(run.model is not None) + graphs) if _needs_gradients(attack) else len(run.engines)
        total += len(run.options.eps_for(attack)) * per_eps
    total += len(run.options.detectors) * len(run.engines)  # each detector on each engine (adaptive, arms race)
    return total + (1 if _full_range_model(run) is not None and _full_range_attack(run) is not None else 0)


def _needs_gradients(attack: Attack | Probe) -> bool:
    """What requires gradients (gradient attacks, AutoAttack, gradient probes) runs on the source and on each
    engine's graph; query-only attacks run on each engine."""
    return GRADIENTS in attack.requires


def _row(attack: Attack, eps: float, route: str, target: str, path: str, logits: np.ndarray, y: np.ndarray,
         clean_pred: np.ndarray, **extra) -> dict:
    return {"attack": attack.name, "norm": attack.norm, "eps": float(eps), "route": route, "target": target,
            "path": path, **outcome_rates(logits.argmax(1), y, clean_pred),
            "settings": dict(getattr(attack, "settings", {})), **extra}


def _run_attack(run: AuditRun, attack: Attack | Probe, bar, spec: str = "") -> None:
    if isinstance(attack, Probe):
        _show(bar, attack, None, "all")
        section = attack.probe(run, lambda stage: _show(bar, attack, None, "all", stage))
        # keyed by name; a probe run twice with other settings (physical:eps=0.1,physical:eps=0.2) by its spec
        run.probes[spec if attack.name in run.probes else attack.name] = {"probe": attack.name, "spec": spec,
                                                                          **section}
        bar.update(1)
        return
    batch = run.options.batch_size
    for eps in run.options.eps_for(attack):
        if _needs_gradients(attack):
            if run.model is not None:
                _show(bar, attack, eps, "source")
                _source_rows(run, attack, eps, bar)
                bar.update(1)
            targets = [(e, g.model) for e, g in zip(run.engines, run.graphs) if g.model is not None]
        else:
            targets = [(e, None) for e in run.engines]
        for engine, model in targets:  # crafted on the engine (its graph's gradients, its queries), judged on it
            _show(bar, attack, eps, engine.label)
            target = Target(lambda z, e=engine: e.predict(z, batch), model, batch,
                            _stages(bar, attack, eps, engine.label))
            x_adv, extra, queries = _craft(run, target, attack, eps)
            route = ENGINE_ROUTE if _needs_gradients(attack) else QUERY
            run.adv[AdversarialKey(attack.name, eps, engine.label, route)] = x_adv
            logits = target.predict(x_adv)
            add_row(run, _row(attack, eps, route, engine.label, str(engine.path), logits, run.y,
                              run.clean[engine.label], **extra), x_adv, logits, queries)
            bar.update(1)


def _show(bar, attack: Attack | Probe, eps: float | None, target: str, stage: str | None = None) -> None:
    where = f"{attack.name}: {stage}" if eps is None else f"{attack.name} eps {eps:g} on {target}" + (
        f": {stage}" if stage else "")
    bar.set_postfix_str(where, refresh=True)


def _stages(bar, attack: Attack, eps: float, target: str):
    return None if bar is None else (lambda stage: _show(bar, attack, eps, target, stage))


def _craft(run: AuditRun, target: Target, attack: Attack, eps: float) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """``attack`` crafted on ``target`` (one call for every attack), projected by the audit onto the ball and the
    range; the row's extra fields (an ensemble's stages, the queries per sample) and the per-sample queries."""
    result = attack.craft(target, run.x, run.y, eps=eps, value_range=run.value_range)
    extra = {"stages": result.stages} if result.stages is not None else {}
    queries = result.queries
    if queries is not None and result.stages is not None:
        # an ensemble's query stage attacked only the points still robust: the others cost it no query, not zero
        queries = queries if queries.any() else None
        attacked = queries[queries > 0] if queries is not None else None
        if attacked is not None:
            extra.update(queries_per_sample=float(attacked.mean()), queries_median=float(np.median(attacked)),
                         queried_samples=int(len(attacked)))
    elif queries is not None:
        extra.update(queries_per_sample=float(queries.mean()), queries_median=float(np.median(queries)))
    rejections = getattr(attack, "last_rejections", None)
    if rejections is not None:  # the genetic attack's oracle: candidates it refused as no longer the original
        extra.update(oracle_rejections=int(rejections.sum()), oracle_rejected_points=int((rejections > 0).sum()))
    return project(result.x_adv, run.x, eps, attack.norm, run.value_range), extra, queries


def _source_rows(run: AuditRun, attack: Attack, eps: float, bar=None) -> None:
    """Crafted with the source's gradients (an ensemble's query stage queries the source), judged on the source
    (white-box) and on each engine (transfer)."""
    o = run.options
    target = Target(run.model.predict, run.model, o.batch_size, _stages(bar, attack, eps, "source"))
    x_adv, extra, queries = _craft(run, target, attack, eps)
    run.adv[AdversarialKey(attack.name, eps)] = x_adv
    if run.crafted_on == "source":
        logits = run.model.predict(x_adv)
        add_row(run, _row(attack, eps, WHITE_BOX, "source", "source", logits, run.y, run.clean["source"], **extra),
                x_adv, logits, queries)
    for e in run.engines:
        logits = e.predict(x_adv, o.batch_size)
        add_row(run, _row(attack, eps, TRANSFER, e.label, str(e.path), logits, run.y, run.clean[e.label],
                          crafted_on=run.crafted_on), x_adv, logits)


def _full_range_model(run: AuditRun):
    """``(crafting model, judge)`` of the full-range check: the source, else the first engine graph."""
    if run.model is not None:
        return run.model, run.model.predict
    for engine, graph in zip(run.engines, run.graphs):
        if graph.model is not None:
            return graph.model, lambda z, e=engine: e.predict(z, run.options.batch_size)
    return None


def _full_range_attack(run: AuditRun) -> GradientAttack | None:
    """PGD where the audit runs it, else its first gradient attack (None: it runs none, only probes)."""
    gradient = [a for a in run.attacks if isinstance(a, GradientAttack)]
    gradient += [c for a in run.attacks for c in getattr(a, "components", ()) if isinstance(c, GradientAttack)]
    return next((a for a in gradient if a.name == "pgd"), gradient[0] if gradient else None)


def _full_range(run: AuditRun, bar) -> tuple[str, float, float] | None:
    """The strongest gradient attack at an eps covering the whole value range (its accuracy should be ~0)."""
    pair, attack = _full_range_model(run), _full_range_attack(run)
    if pair is None or attack is None:
        return None
    model, judge = pair
    width = run.value_range[1] - run.value_range[0]
    eps = width * (float(np.prod(run.x.shape[1:])) ** 0.5 if attack.norm == "l2" else 1.0)
    x_full, _, _ = _craft(run, Target(judge, model, run.options.batch_size), attack, eps)
    bar.update(1)
    if not (judge(run.x).argmax(1) == run.y).any():
        return attack.name, eps, None  # nothing right to begin with: nothing to judge
    return attack.name, eps, float((judge(x_full).argmax(1) == run.y).mean())


def _report(run: AuditRun, full: tuple[str, float, float] | None) -> AuditReport:
    from dlforge.adversarial.evidence import comparisons, gallery

    detected, adaptive, race = run.cache.get("detections", (None, None, None))  # run_audit's, inside its bar

    o, y = run.options, run.y
    pair = _full_range_model(run)
    grad = pair[0].input_gradients(run.x[:256], y[:256]) if pair is not None else None
    gaps = checks.transfer_gaps(run.rows, o.gap_bar)
    first = run.engines[0]
    invariance = audit_invariance(run)
    bounds = checks.tramer_bounds(adaptive, run.rows, {e.label: float((run.clean[e.label] == y).mean())
                                                        for e in run.engines})
    return AuditReport(
        env=environment(), target=[str(e.path) for e in run.engines],
        engines=[{"label": e.label, "path": str(e.path), "precision": e.precision,
                  "clean_accuracy": float((run.clean[e.label] == y).mean())} for e in run.engines],
        source=str(run.crafter.path) if run.crafter is not None else None, crafted_on=run.crafted_on,
        data=run.dataset.name, samples=int(len(y)), value_range=list(run.value_range),
        clean_accuracy=float((run.clean[first.label] == y).mean()), settings=o.params(),
        rows=run.rows, comparisons=comparisons(run), engine_graphs=[g.describe() for g in run.graphs],
        transfer_gaps=gaps, invariance=invariance,
        checks=[checks.logits_check(first.predict(run.x[:64])), checks.gradient_check(grad),
                checks.full_range_check(full), checks.monotone_check(run.rows), checks.masking_check(run.rows),
                checks.transfer_gap_check(gaps, o.gap_bar), checks.engine_gradient_check(gaps, o.gap_bar),
                invariance_check(invariance), checks.tramer_check(bounds)],
        probes=run.probes or None, detections=detected, adaptive=adaptive, arms_race=race,
        tramer=bounds or None, adaptive_gallery=run.cache.get("adaptive_gallery"),
        gallery=gallery(run, run.dataset.labels),
        per_sample={"file": SAMPLES_FILE, "version": SAMPLES_VERSION, "count": len(run.samples),
                    "records": run.samples} if o.per_sample else None)


__all__ = ["AuditOptions", "DEFAULT_EPS", "DEFAULT_EPS_L2", "run_audit"]
