"""The pretrained CIFAR-10 ResNets of ../shared/data through every stage, and the properties that a LeNet could not
show: INT8 engine-graph gradients that point where the fp32 graph's do on a residual network, and audit checks
that fail when they do not (the identity straight-through estimator ignored ONNX Runtime's folded ReLUs)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import dlforge.onnx_torch as onnx_torch
from dlforge.adversarial.attacks.torch_model import TorchModel
from dlforge.adversarial.audit import run_audit
from dlforge.adversarial.engine_graph import gradient_agreement
from dlforge.artifact import open_artifact
from dlforge.data import load_dataset
from dlforge.train import load_checkpoint
from dlforge.train.checkpoint import attack_model
from tests.helpers import dlforge_ok, shared_path

CIFAR_LABELS = "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"
NORMALIZE = "0.485,0.456,0.406/0.229,0.224,0.225"  # the training preprocessing the shared README states
FILES = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th"}


def dlforge(*args):
    return dlforge_ok(*args).output


def _import(name: str, out):
    images = shared_path("cifar10-test-first20")
    dlforge("import", name, "--weights", shared_path("cifar10-resnet", FILES[name]), "--data", images,
            "--labels", CIFAR_LABELS, "--normalize", NORMALIZE, "-o", out)
    return out


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory):
    """ResNet-20 imported, exported, and built as ORT fp32 and INT8 (U8S8) engines, from the CLI."""
    root = tmp_path_factory.mktemp("resnet20")
    _import("resnet20", root / "checkpoint")
    dlforge("export", root / "checkpoint", "-o", root / "onnx")
    dlforge("build", root / "onnx", "-o", root / "fp32")
    dlforge("build", root / "onnx", "-o", root / "int8", "--precision", "int8")
    return root


@pytest.mark.parametrize("name, correct", [("resnet20", 20), ("resnet32", 19)])
def test_zoo_resnets_load_the_pretrained_files_and_match_their_own_architecture(name, correct, tmp_path):
    ckpt = _import(name, tmp_path / name)
    card = json.loads((ckpt / "card.json").read_text())
    assert card["metrics"]["test_accuracy"] == correct / 20  # as the files' own architecture classifies them
    spec = importlib.util.spec_from_file_location("akamaster_resnet", shared_path("cifar10-resnet", "resnet.py"))
    reference_code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference_code)
    reference = getattr(reference_code, name)()
    state = torch.load(shared_path("cifar10-resnet", FILES[name]), map_location="cpu", weights_only=True)
    reference.load_state_dict({k.removeprefix("module."): v for k, v in state["state_dict"].items()})
    ds = load_dataset(str(shared_path("cifar10-test-first20")), labels=tuple(CIFAR_LABELS.split(",")))
    x = torch.from_numpy(ds.x_test)
    mean, std = (torch.tensor([float(v) for v in part.split(",")]).view(1, 3, 1, 1) for part in NORMALIZE.split("/"))
    ours, _ = load_checkpoint(ckpt)
    with torch.no_grad():
        expected, got = reference.eval()((x - mean) / std), ours(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert int((expected.argmax(1).numpy() == ds.y_test).sum()) == correct


def _gradients(root, identity: bool, monkeypatch) -> dict:
    monkeypatch.setattr(onnx_torch.quantization, "IDENTITY_STE", identity)
    images = load_dataset(str(shared_path("cifar10-test-first20")), labels=tuple(CIFAR_LABELS.split(",")))
    source = attack_model(open_artifact(root / "checkpoint"), "cpu")
    graph = TorchModel(onnx_torch.torch_module_from_onnx(root / "int8" / "model.onnx").eval(), "cpu")
    return gradient_agreement(source, graph, images.x_test, images.y_test)


def test_int8_engine_graph_gradients_agree_with_fp32(resnet20, monkeypatch):
    right = _gradients(resnet20, False, monkeypatch)
    assert right["samples"] == 20 and right["cosine_median"] >= 0.8, right
    wrong = _gradients(resnet20, True, monkeypatch)  # the identity backward through the folded ReLUs
    assert abs(wrong["cosine_median"]) < 0.2 and wrong["norm_ratio_median"] > 10, wrong


def _checks(report) -> dict:
    return {c["name"].split(" (")[0]: c["status"] for c in report.checks}


def test_audit_checks_pass_with_sound_gradients_and_fail_with_the_identity_estimator(resnet20, monkeypatch):
    engines = [resnet20 / "fp32", resnet20 / "int8"]
    settings = dict(attacks=("fgsm", "pgd", "square"), eps=(8 / 255,), samples=20, progress=False)
    sound = run_audit(engines, **settings)
    rows = {(r["attack"], r["route"], r["target"]): r["robust_accuracy"] for r in sound.rows}
    for target in ("fp32", "int8"):  # every gradient route within 0.05 of the strongest attack on the engine
        strongest = min(v for (a, route, t), v in rows.items() if t == target)
        assert rows["pgd", "white-box (engine)", target] <= strongest + 0.05
        assert rows["pgd", "transfer", target] <= strongest + 0.05
    checks = _checks(sound)
    assert checks["query attack is not stronger than the gradient attacks"] == "pass"
    assert checks["engine-graph attacks are at least as strong as transfer"] == "pass"
    int8 = next(g for g in sound.engine_graphs if g["engine"] == "int8")
    assert int8["gradient_agreement"]["cosine_median"] >= 0.8

    monkeypatch.setattr(onnx_torch.quantization, "IDENTITY_STE", True)
    broken = run_audit(engines, **settings)
    checks = _checks(broken)
    assert checks["query attack is not stronger than the gradient attacks"] == "fail"
    assert checks["engine-graph attacks are at least as strong as transfer"] == "fail"
    int8 = next(g for g in broken.engine_graphs if g["engine"] == "int8")
    assert abs(int8["gradient_agreement"]["cosine_median"]) < 0.2


def test_imagenet_int8_mobilenet_is_attacked_through_its_own_qoperator_graph(tmp_path):
    """The ONNX Model Zoo's INT8 MobileNetV2 (QLinearConv, QLinearAdd, ...): imported with its preprocessing and
    class list, PGD from its own graph at eps 4/255 in pixel units leaves robust accuracy <= 0.10."""
    root = tmp_path / "mnv2"
    dlforge("import", shared_path("onnx-models", "mobilenetv2-12-int8.onnx"), "--labels-file",
            shared_path("imagenet-labels", "synset.txt"), "--normalize", NORMALIZE, "--resize", "256",
            "--data", shared_path("imagenet-samples"), "-o", root / "onnx")
    dlforge("build", root / "onnx", "-o", root / "engine")
    report = run_audit([root / "engine"], attacks=("pgd:steps=10",), eps=(4 / 255,), samples=6, progress=False)
    graph = report.engine_graphs[0]
    assert graph["usable"] and graph["match"]["max_abs_diff"] == 0  # the QOperator forward is ORT's, exactly
    row = next(r for r in report.rows if r["route"] == "white-box (engine)")
    assert report.engines[0]["precision"] == "int8" and row["robust_accuracy"] <= 0.10
    assert {c["name"].split(" (")[0]: c["status"] for c in report.checks}[
        "white-box accuracy at eps = full range is near 0"] == "pass"


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_feature_detectors_read_resnet20_engines_as_their_converted_graphs_do(resnet20, precision):
    """The learned detectors read every layer of the engine's own graph (fp32 and INT8), checked against the engine;
    the adaptive attacks read the same values from the converted graph, and get gradients through them."""
    import numpy as np

    from dlforge.adversarial.engine_graph import engine_graph
    from dlforge.adversarial.features import EngineFeatures, torch_values
    from dlforge.runtime import open_deployed

    images = load_dataset(str(shared_path("cifar10-test-first20")), labels=tuple(CIFAR_LABELS.split(",")))
    x = images.x_test.astype(np.float32)
    engine = open_deployed(resnet20 / precision)
    features = EngineFeatures(engine, "layers", check=x)  # raises unless its logits still agree with the engine
    assert len(features.names) >= 19  # the input of every convolution after the first, the pooled features, logits
    graph = engine_graph(engine, x, noise=8 / 255, value_range=(0.0, 1.0))
    assert graph.model is not None, graph.reason
    xt = torch.from_numpy(x).requires_grad_(True)
    theirs = torch_values(graph.model.model, features.names, xt)
    for ours, value in zip(features(x), theirs):
        diff, scale = np.abs(ours - value.detach().numpy()), np.abs(ours).max() + 1e-6
        if precision == "fp32":
            assert diff.max() <= 1e-4 * scale
        else:  # INT8: rounding differences of ORT's integer kernels, on a few percent of values deep in the network
            # (a level or two of the activations' quantization step, the match the engine-graph route accepts)
            assert diff.max() <= 0.03 * scale and diff.mean() <= 2e-3 * scale
    theirs[-2].sum().backward()  # the penultimate features pass gradients to the input
    assert torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0


def test_blacklight_flags_square_and_the_genetic_attack_fools_the_int8_resnet20(resnet20):
    import numpy as np

    from dlforge.adversarial.attacks import Target, make_attack
    from dlforge.adversarial.stateful import Blacklight, Watched
    from dlforge.runtime import open_deployed

    images = load_dataset(str(shared_path("cifar10-test-first20")), labels=tuple(CIFAR_LABELS.split(",")))
    x, y = images.x_test.astype(np.float32), images.y_test
    fp32, int8 = open_deployed(resnet20 / "fp32"), open_deployed(resnet20 / "int8")
    eps = 8 / 255
    watched = Watched(fp32.predict, Blacklight(), len(x))  # the reference's CIFAR-10 setting
    for i in range(len(x)):
        make_attack("square", queries=300, seed=i).run(lambda z, i=i: watched(z, np.full(len(z), i)), x[i:i + 1],
                                                       y[i:i + 1], eps=eps)
    long = watched.queries > 10
    assert long.sum() >= 5 and (watched.first[long] > 0).all() and watched.first.max() <= 10, (watched.queries,
                                                                                              watched.first)
    # the genetic attack needs only the INT8 engine's answers
    result = make_attack("genetic", queries=600).craft(Target(int8.predict), x, y, eps=eps)
    assert np.abs(result.x_adv - x).max() <= eps + 1e-6
    assert (int8.predict(result.x_adv).argmax(1) != y).mean() >= 0.5
