"""The audit's options (``dlforge audit``'s flags are generated from :class:`AuditOptions`) and their defaults,
and :func:`for_modality`: the same options made right for the kind of input the audited model takes."""

from __future__ import annotations

from dataclasses import dataclass

from dlforge.adversarial.attacks import Attack
from dlforge.adversarial.probes import Probe, make
from dlforge.errors import InputError
from dlforge.options import Options, option

DEFAULT_EPS = (0.0, 0.05, 0.1, 0.2, 0.3)
DEFAULT_EPS_L2 = (0.0, 0.5, 1.0, 2.0, 3.0)
DEFAULT_ATTACKS = ("fgsm", "pgd", "square")
# A model of sound (card model.audio): budgets in dB relative to the clip (Carlini & Wagner's dB_x), and the
# attacks that do not assume pixels
DEFAULT_EPS_DB = (-50.0, -40.0, -30.0)
DEFAULT_AUDIO_ATTACKS = ("fgsm", "pgd")
ENGINE_GRADIENTS = ("auto", "require", "off")


@dataclass
class AuditOptions(Options):
    attacks: tuple[str, ...] = option(DEFAULT_ATTACKS, "Attacks to run, by registered name, each with "
                                      "optional settings (pgd:steps=100). See `dlforge audit --list-attacks`.",
                                      nonempty=True)
    eps: tuple[float, ...] = option(DEFAULT_EPS, "L-inf budgets, in the input's value units.", min=0, nonempty=True)
    eps_l2: tuple[float, ...] = option(DEFAULT_EPS_L2, "L2 budgets (for L2 attacks).", min=0, nonempty=True)
    eps_db: tuple[float, ...] | None = option(None, "Audio models: L-inf budgets in dB relative to each clip's peak "
                                                    "(Carlini & Wagner's dB_x = 20 log10 max|d| - 20 log10 max|x|), "
                                                    "replacing --eps (default for audio: -50,-40,-30; the clean "
                                                    "row is added).", max=0, nonempty=True)
    source: str | None = option(None, "The engine's PyTorch checkpoint, for gradient attacks (default: found up "
                                      "the verified lineage).")
    surrogate: str | None = option(None, "Another model's checkpoint to transfer from.")
    data: str | None = option(None, "Dataset to attack on (default: the model's own test split).")
    data_dir: str | None = option(None, "Directory of the dataset's files.")
    samples: int = option(500, "Test images to attack.", min=1)
    start: int = option(0, "Index of the first test image to attack (a shard of the test split).", min=0)
    per_sample: bool = option(False, "Record each sample's outcome per attack, eps, route and engine in "
                                     "samples.jsonl beside audit.json (needs -o).")
    batch_size: int = option(256, "Batch size of gradient attacks and engine calls.", min=1)
    device: str = option("cpu", "Where gradient attacks run.", choices=("cpu", "cuda"))
    pgd_steps: int = option(40, "Steps of PGD (pgd, pgd-l2) unless its spec sets them; other attacks keep their own "
                                "defaults (apgd 100, fab 100, cw-l2 1000).", min=1)
    square_queries: int = option(1000, "Query budget per image of Square unless its spec sets it.", min=1)
    seed: int = option(0, "Seed of every random choice.", min=0)
    gallery: int = option(6, "Clean/adversarial pairs shown in the report.", min=0)
    detectors: tuple[str, ...] = option((), "Input filters to evaluate, each with optional settings: feature-squeezing"
                                            "[:bits=1:median=2], strip[:fpr=0.01], autoencoder=ENGINE_DIR[:fpr=0.05], "
                                            "mahalanobis[:train=5000], lid[:tuned=fgsm] (the last two learned on the "
                                            "engine's own activations).")
    engine_gradients: str = option("auto", "Gradient attacks on each engine's own graph: auto (where the graph can "
                                   "be differentiated and matches the engine), require (exit 2 where it cannot), "
                                   "off.", choices=ENGINE_GRADIENTS)
    gap_bar: float = option(0.05, "Flag a transfer gap (transfer minus engine white-box robust accuracy) above this.",
                            min=0, max=1)
    adaptive: bool = option(False, "Also attack each --detectors detector adaptively (PGD on the classifier's and "
                                   "the detector's loss; Orthogonal PGD; the genetic attack where --attacks has "
                                   "it), judged on the engine behind it.")
    arms_race: int = option(0, "Rounds of the arms race (needs --adaptive): each round retrains every --detectors "
                                "detector that learns from examples (lid) on the adaptive examples crafted against it "
                                "on training images, then attacks it again.", min=0)
    rebuild_check: bool = option(False, "Also build each engine again from its parent ONNX with its card's settings "
                                        "and check the two answer alike (rebuild invariance).")

    def check(self) -> None:
        from dlforge.adversarial.detectors import detector_spec

        if self.source and self.surrogate:
            raise InputError("give --source or --surrogate, not both")
        for spec in self.attacks:
            self.attack(spec)
        for spec in self.detectors:
            detector_spec(spec)
        if self.adaptive and not self.detectors:
            raise InputError("--adaptive attacks the detectors of --detectors: name at least one (e.g. --detectors "
                             "feature-squeezing)")
        if self.arms_race:
            if not self.adaptive:
                raise InputError("--arms-race retrains detectors on adaptive examples: add --adaptive")
            if not any(hasattr(detector_spec(s)[0], "retrain") for s in self.detectors):
                raise InputError("--arms-race needs a detector that learns from examples among --detectors (lid); "
                                 f"{', '.join(self.detectors)} cannot be retrained")

    def attack(self, spec: str) -> Attack | Probe:
        """The attack or probe ``spec`` names, with this audit's budgets where it takes them."""
        return make(spec, steps=self.pgd_steps, queries=self.square_queries, seed=self.seed)

    def eps_for(self, attack: Attack) -> tuple[float, ...]:
        return self.eps_l2 if attack.norm == "l2" else self.eps


def for_modality(options: AuditOptions, info) -> AuditOptions:
    """The options for the model's kind of input: an audio model's budgets in dB (``--eps-db``, or its default
    when ``--eps`` was left at the image default) and its default attacks; attacks, probes and detectors that
    assume pixels are refused on it, and dB budgets on an image model."""
    import dataclasses

    audio = info is not None and info.is_audio
    if not audio and options.eps_db is not None:
        raise InputError("--eps-db is for audio models (budgets relative to a clip's peak); this model takes "
                         "images: give --eps")
    modality = "audio" if audio else "image"
    changes: dict = {}
    if audio and options.attacks == DEFAULT_ATTACKS:
        changes["attacks"] = DEFAULT_AUDIO_ATTACKS
    for spec in changes.get("attacks", options.attacks):
        attack = options.attack(spec)
        if modality not in attack.modalities:
            hint = ("audio: fgsm, pgd, genetic, targeted, over-the-air" if audio else
                    "it is for audio models")
            raise InputError(f"{spec} works on {' and '.join(attack.modalities)} inputs, and "
                             f"{info.name if info else 'this model'} takes {modality}; drop it from --attacks ({hint})")
    if not audio:
        return options
    if options.detectors:
        raise InputError("--detectors are input filters for images; none is built for audio yet: drop --detectors")
    if options.eps_db is not None or options.eps == DEFAULT_EPS:
        from dlforge.data.wav import eps_from_db

        db = options.eps_db if options.eps_db is not None else DEFAULT_EPS_DB
        changes["eps"] = (0.0, *sorted(eps_from_db(d, info.audio_peak) for d in db))
    return dataclasses.replace(options, **changes) if changes else options
