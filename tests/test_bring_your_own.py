"""Acceptance: a model of your own and images of your own go through every stage from the CLI.

The model is the residual CNN defined in tests/test_user_model.py (not in the zoo), trained there by
a plain PyTorch loop on normalized digits; the images are real digits written as PNG files.
"""

import json

import numpy as np
import torch
from PIL import Image

from dlforge.data import load_dataset
from tests.helpers import dlforge_ok
from tests.test_user_model import MEAN, STD, model  # noqa: F401  (a module fixture reused)

ENGINE = "white-box (engine)"


run = dlforge_ok


def build_both(onnx_dir, root):
    for precision in ("fp32", "int8"):
        run("build", onnx_dir, "-o", root / precision, "--precision", precision)
    return root / "fp32", root / "int8"


def audit(*engines, eps="0,0.1,0.3"):
    out = engines[0].parent / "audit"
    run("audit", *engines, "--attacks", "fgsm,pgd", "--eps", eps, "--samples", "120", "--pgd-steps", "20", "-o", out)
    return json.loads((out / "audit.json").read_text())  # with the gallery, which --json leaves out


def assert_pixel_budget(report, eps: float, std: float):
    """The gallery's examples moved by up to ``eps`` *pixels*, more than eps in normalized units would allow."""
    assert report["gallery"], "no successful example to look at"
    for item in report["gallery"]:
        diff = float(np.abs(np.asarray(item["adversarial"]) - np.asarray(item["clean"])).max())
        assert diff <= eps + 1e-5 and diff > eps * std + 1e-3, (diff, eps)


def routes(report):
    return {(r["attack"], r["route"], r["target"]) for r in report["rows"]}


def test_own_model_from_a_pt2_through_export_builds_bench_and_audit(model, tmp_path):  # noqa: F811
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, tmp_path / "net.pt2")
    run("import", tmp_path / "net.pt2", "--data", "digits", "--normalize", f"{MEAN}/{STD}", "-o", tmp_path / "ckpt")
    run("export", tmp_path / "ckpt", "-o", tmp_path / "onnx")
    fp32, int8 = build_both(tmp_path / "onnx", tmp_path)
    bench = json.loads(run("bench", fp32, int8, "--torch", tmp_path / "ckpt", "--batch-sizes", "8", "--iterations",
                           "5", "--duration", "0.05", "--rounds", "1", "--accuracy", "--json").stdout)
    accuracy = {(r["backend"], r["precision"]): r.get("accuracy") for r in bench["results"]}
    assert len(accuracy) == 3 and all(a is not None and a > 0.8 for a in accuracy.values()), accuracy

    report = audit(fp32, int8)
    for target in ("fp32", "int8"):
        assert {("pgd", "transfer", target), ("pgd", ENGINE, target)} <= routes(report)
    assert ("pgd", "white-box", "source") in routes(report)
    assert all(g["usable"] for g in report["engine_graphs"])
    # the checkpoint normalizes inside: eps is in pixel units, not in units of the normalized input
    assert_pixel_budget(report, 0.3, STD)


def test_image_folder_trains_evaluates_and_audits_with_normalization(tmp_path):
    digits = load_dataset("digits")
    folder = tmp_path / "images"
    xs, ys = (np.concatenate(a) for a in zip(*(digits.split(s) for s in ("train", "val", "test"))))
    for i, (x, y) in enumerate(zip(xs, ys)):
        (folder / f"class-{y}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[0] * 255).round().astype(np.uint8)).resize((16, 16)).save(folder / f"class-{y}" / f"{i}.png")
    run("train", "lenet", "--data", folder, "--normalize", "auto", "--epochs", "6", "-o", tmp_path / "ckpt")
    card = json.loads((tmp_path / "ckpt" / "card.json").read_text())
    std = card["normalization"]["std"][0]
    assert card["model"]["inputs"][0]["shape"][1:] == [1, 16, 16] and 0 < std < 1
    run("export", tmp_path / "ckpt", "-o", tmp_path / "onnx")  # verified against torch, Normalize included
    fp32, int8 = build_both(tmp_path / "onnx", tmp_path)  # each evaluated on the folder's own test split
    built = json.loads((int8 / "card.json").read_text())
    assert built["evaluation"]["accuracy"] > 0.7 and built["evaluation"]["dataset"] == str(folder.resolve())

    report = audit(fp32, int8)
    assert report["data"] == str(folder.resolve()) and report["clean_accuracy"] > 0.7
    assert ("pgd", ENGINE, "int8") in routes(report)
    assert_pixel_budget(report, 0.3, std)
