"""Every entry of every registry keeps its registry's contract: parametrized over the registered names, so a new
entry is checked the moment it is registered (no test to write for the contract itself)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from dlforge.adversarial.attacks import ATTACKS, GRADIENTS, QUERIES, Attack, attack_options, describe, make_attack
from dlforge.adversarial.probes import PROBES, Probe, make
from dlforge.adversarial.attacks.projection import NORMS
from dlforge.adversarial.detectors import DETECTORS
from dlforge.adversarial.poisoning.defences import DATASET_DEFENCES
from dlforge.backends import BACKENDS
from dlforge.build.options import PRECISIONS
from dlforge.data.dataset import DATA_FORMATS, DATASETS, Dataset
from dlforge.errors import InputError
from dlforge.kinds import ARTIFACT_KINDS


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_contract(name):
    cls = ATTACKS.get(name)
    assert (cls.__doc__ or "").strip(), f"{name}: the first docstring line is its --list-attacks summary"
    attack = make_attack(name)  # its own defaults pass its own type and range checks
    assert attack.name == name and isinstance(attack, Attack) and attack.norm in NORMS
    assert attack.requires and attack.requires <= {GRADIENTS, QUERIES}, f"{name}: say what it requires"
    assert not inspect.isabstract(cls), f"{name}: craft (or run) is implemented"
    for option, default in attack_options(cls).items():
        assert default is not inspect.Parameter.empty, f"{name}: option {option} needs a default"
    with pytest.raises(InputError, match="has no option"):
        make_attack(f"{name}:no_such_option=1")
    assert name in {a["name"] for a in describe(ATTACKS)}
    assert name not in PROBES, f"{name} is both an attack and a probe: an --attacks spec could not tell them apart"


@pytest.mark.parametrize("name", PROBES.names())
def test_probe_contract(name):
    cls = PROBES.get(name)
    assert (cls.__doc__ or "").strip(), f"{name}: the first docstring line is its --list-attacks summary"
    probe = make(name)  # reached through the same --attacks spec as the attacks
    assert isinstance(probe, Probe) and probe.name == name and not inspect.isabstract(cls)
    assert probe.requires and probe.requires <= {GRADIENTS, QUERIES}, f"{name}: say what it requires"
    for option, default in attack_options(cls).items():
        assert default is not inspect.Parameter.empty, f"{name}: option {option} needs a default"
    with pytest.raises(InputError, match="probe .* has no option"):
        make(f"{name}:no_such_option=1")
    assert name in {a["name"] for a in describe(PROBES)}


@pytest.mark.parametrize("name", BACKENDS.names())
def test_backend_contract(name):
    cls = BACKENDS.get(name)
    assert cls.precisions and set(cls.precisions) <= set(PRECISIONS) - {"auto"}
    assert cls.payload and "/" not in cls.payload
    assert not inspect.isabstract(cls), f"{name}: compile, open and open_engine are all implemented"
    assert cls.triton_platform is None or (cls.triton_platform, cls.triton_file or cls.payload) in {
        ("onnxruntime_onnx", "model.onnx"), ("tensorrt_plan", "model.plan")}  # platforms Triton has, their file names
    assert cls.name == name
    if cls.options_class is not None:  # its own options: a validated Options dataclass, each with a default and help
        import dataclasses

        from dlforge.options import Options

        assert issubclass(cls.options_class, Options) and isinstance(cls.options_class(), Options)
        for f in dataclasses.fields(cls.options_class):
            assert f.metadata.get("help"), f"{name}: option {f.name} needs help text (the build's --help shows it)"


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_contract(name, tmp_path):
    """A named dataset loads (digits is embedded) or, with no files where it looks, says so: never a crash."""
    loader = DATASETS.get(name)
    try:
        dataset = loader(tmp_path / "empty")
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(dataset, Dataset) and dataset.x_train.dtype == np.float32
    assert dataset.x_train.ndim == (3 if dataset.details.get("audio") else 4)  # (N, 1, samples) or (N, C, H, W)
    assert dataset.y_train.dtype == np.int64 and len(dataset.labels) >= 2


@pytest.mark.parametrize("name", DATA_FORMATS.names())
def test_data_format_contract(name, tmp_path):
    fmt = DATA_FORMATS.get(name)
    assert callable(fmt.matches) and callable(fmt.load) and fmt.description
    folder = tmp_path / "images.npz"  # a folder, whatever its name: formats never claim one (image folders do)
    folder.mkdir()
    assert not fmt.matches(folder), f"{name} claims a folder"
    for path in (tmp_path / "x.npz", tmp_path / "x.csv", tmp_path / "x.bin"):
        if fmt.matches(path):  # a file of the format that is not readable: a clean error, not a crash
            path.write_bytes(b"not this format")
            with pytest.raises(InputError):
                fmt.load(path)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_detector_contract(name, digits):
    """Fitted on clean images at its FPR, a detector flags a bool per input; one that needs an argument
    refuses to be built without it."""
    from dlforge.adversarial.detectors import Detector, make_detector

    cls = DETECTORS.get(name)
    assert (cls.__doc__ or "").strip()
    with pytest.raises(InputError, match=f"detector '{name}' has no option 'no_such_option'"):
        make_detector(f"{name}{'=x' if cls.takes_argument else ''}:no_such_option=1")
    if cls.takes_argument:
        with pytest.raises(InputError, match="needs an argument"):
            make_detector(name)
        return
    with pytest.raises(InputError, match="fpr"):  # an option of the wrong type is refused by the shared grammar
        make_detector(f"{name}:fpr=true")
    assert make_detector(f"{name}:fpr=0.2").fpr == 0.2  # specs carry options, as attack specs do
    weights = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    predict = lambda x: x.reshape(len(x), -1) @ weights  # noqa: E731  (a fixed linear classifier)
    detector = make_detector(name)
    if type(detector).prepare is not Detector.prepare:  # fitted on an engine's features (tests/adversarial/test_learned)
        with pytest.raises(ValueError, match="prepare"):
            detector.fit(predict, digits.x_val)
        return
    try:
        detector.fit(predict, digits.x_val)
        flags = detector.detect(predict, digits.x_test[:50])
    finally:
        detector.close()
    assert flags.shape == (50,) and flags.dtype == bool


@pytest.mark.parametrize("name", DATASET_DEFENCES.names())
def test_dataset_defence_contract(name):
    cls = DATASET_DEFENCES.get(name)
    defence = cls(**({"eps": 0.1} if "eps" in inspect.signature(cls.__init__).parameters else {}))
    rng = np.random.default_rng(0)
    features, y = rng.normal(size=(200, 16)).astype(np.float32), np.repeat(np.arange(2), 100)
    flags = defence.flag(features, y)
    assert flags.flagged.shape == (200,) and flags.flagged.dtype == bool
    assert isinstance(defence.settings(), dict)


@pytest.mark.parametrize("name", ARTIFACT_KINDS.names())
def test_artifact_kind_contract(name, tmp_path):
    """Each kind says which command makes it; a card of the kind without its required fields is refused
    with a message naming what is missing, never a crash."""
    from dlforge.artifact import ArtifactError
    from dlforge.card_validation import validate_card

    kind = ARTIFACT_KINDS.get(name)
    assert kind.name == name and kind.produced_by.startswith("dlforge ")
    assert kind.headline is None or callable(kind.headline)
    card = {"schema_version": 1, "kind": name, "payload": "x.json", "sha256": None, "parent": None, "model": None}
    if kind.holds_model:
        with pytest.raises(ArtifactError, match=f"a {name} card needs a 'model' section"):
            validate_card(card, tmp_path / "card.json")
    elif kind.check_card is None:
        validate_card(card, tmp_path / "card.json")
