"""The pretrained CIFAR-10 ResNet-20 end to end: engine latency, attack speed against torchattacks,
engine-graph PGD, and the audit's AutoAttack wall time, measured side by side in one run.

The model is akamaster's ResNet-20 (../shared/data/cifar10-resnet), imported with its normalization
inside the checkpoint so it takes pixels in [0, 1]; the inputs are the 20 CIFAR-10 test images of
../shared/data/cifar10-test-first20 (those the checkpoint classifies correctly), tiled to each batch.

1. Latency: the ONNX Runtime fp32 and INT8 engines against eager PyTorch (the checkpoint's model,
   eval mode, ``torch.inference_mode``) at batch 1 and 64, with 1 thread and the default; rounds
   alternate (torch, fp32, int8, torch, ...) after a warm-up; medians of every call.
2. Attacks: dlforge's PGD (L-inf, eps 8/255, 10 steps of 2/255, random start) and APGD-CE
   (1 restart, rho 0.75) against torchattacks' PGD and APGD with the same settings, on the same
   ``nn.Module`` object (the TorchModel's: eval, frozen parameters, channels-last) and the same
   input tensors; rounds alternate; examples/s from the median; robust accuracy of both.
3. Engine-graph PGD: dlforge's PGD through ``torch_module_from_onnx`` of the fp32 and the INT8
   engine's model.onnx against through the PyTorch source. Goal: fp32 graph >= 0.8x the source.
4. ``dlforge audit ENGINE --source CHECKPOINT --attacks autoattack --eps 0.0314 --samples N`` as
   a subprocess, wall time scaled to 100 images, on the fp32 and the INT8 engine (alternating).

    python bench/resnet_speed.py [--run DIR] [--samples 64] [--rounds 5] [--threads N] [--device cpu]
        [--apgd-steps 10] [--autoattack-samples 20] [--autoattack-rounds 1] [--skip-autoattack]

Without ``--run`` the checkpoint, onnx and both engines are built in a temporary directory with the
dlforge CLI (import, export, build, build --precision int8). ``--run`` takes a directory holding
them as ``checkpoint``/``ckpt``, ``engine-ort-fp32``/``fp32`` and ``engine-ort-int8``/``int8``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import attack_parser, parse_attack_args

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED / "cifar10-resnet" / "resnet20-12fca82f.th"
IMAGES = SHARED / "cifar10-test-first20"
LABELS = "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck"
NORMALIZE = "0.485,0.456,0.406/0.229,0.224,0.225"
EPS = 8 / 255
PGD_STEPS = 10
AUDIT_EPS = "0.0314"
LAYOUT = {"checkpoint": ("checkpoint", "ckpt"), "fp32": ("engine-ort-fp32", "fp32"),
          "int8": ("engine-ort-int8", "int8")}


def dlforge_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m dlforge ARGS`` with this interpreter; fail loudly with its output."""
    done = subprocess.run([sys.executable, "-m", "dlforge", *args], check=False, capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"dlforge {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def build_run(tmp: Path) -> Path:
    """Import the pretrained ResNet-20, export it, build fp32 and INT8 ONNX Runtime engines under ``tmp``."""
    for needed in (WEIGHTS, IMAGES):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: pass --run DIR with a ResNet-20 run, or restore ../shared/data")
    run = tmp / "resnet20"
    steps = [("import", "resnet20", "--weights", str(WEIGHTS), "--data", str(IMAGES), "--labels", LABELS,
              "--normalize", NORMALIZE, "-o", str(run / "checkpoint")),
             ("export", str(run / "checkpoint"), "-o", str(run / "onnx")),
             ("build", str(run / "onnx"), "-o", str(run / "engine-ort-fp32")),
             ("build", str(run / "onnx"), "-o", str(run / "engine-ort-int8"), "--precision", "int8")]
    for step in steps:
        start = time.perf_counter()
        dlforge_cli(*step)
        print(f"  dlforge {step[0]} -> {Path(step[step.index('-o') + 1]).name} ({time.perf_counter() - start:.1f} s)",
              flush=True)
    return run


def find(run: Path, role: str) -> Path:
    for name in LAYOUT[role]:
        if (run / name).is_dir():
            return run / name
    raise SystemExit(f"{run} holds no {role} artifact (looked for {', '.join(LAYOUT[role])})")


def tile(x: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(x[np.arange(n) % len(x)])


def machine_facts(args) -> list[str]:
    from dlforge.env import cpu_model, package_version

    versions = ", ".join(f"{p} {package_version(p)}" for p in ("dlforge", "torch", "onnxruntime", "onnx", "numpy",
                                                               "torchattacks") if package_version(p))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return [f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}",
            f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}, python {platform.python_version()}",
            f"packages: {versions}",
            (f"torch threads {torch.get_num_threads()} (--threads {args.threads or 'not given'}), "
             f"device {args.device}; load average at start {load}")]


# -- 1. latency --------------------------------------------------------------------------------------
def latency(paths: dict[str, Path], x_all: np.ndarray, args) -> list[dict]:
    """Median ms of eager torch, ORT fp32 and ORT INT8 per (batch, threads), alternating rounds."""
    from dlforge.bench.stats import time_calls, warm_up
    from dlforge.runtime.deployed import open_deployed
    from dlforge.train import load_checkpoint

    model = load_checkpoint(paths["checkpoint"])[0].eval().to(args.device)
    default_threads = torch.get_num_threads()
    rows = []
    for threads in dict.fromkeys((1, args.threads)):  # None: each library's own default
        engines = {p: open_deployed(paths[p], threads=threads, device=args.device) for p in ("fp32", "int8")}
        torch.set_num_threads(threads or default_threads)
        for batch in (1, 64):
            x = tile(x_all, batch)
            xt = torch.from_numpy(x)

            def run_torch(xt=xt):
                with torch.inference_mode():
                    return model(xt.to(args.device)).cpu().numpy()

            calls = {"torch": run_torch,
                     **{p: (lambda e=e, f={e.session.inputs[0].name: x}: e.session.run(f)) for p, e in engines.items()}}
            for call in calls.values():
                warm_up(call, iterations=10, duration_s=0.3)
            samples = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, call in calls.items():
                    samples[name].append(time_calls(call, iterations=5, duration_s=0.2))
            ms = {name: float(np.median(np.concatenate(s))) for name, s in samples.items()}
            rows.append({"batch": batch, "threads": threads or f"default ({default_threads})",
                         "torch": ms["torch"], "fp32": ms["fp32"], "int8": ms["int8"],
                         "int8_x": ms["fp32"] / ms["int8"], "fp32_vs_torch": ms["torch"] / ms["fp32"],
                         "int8_vs_torch": ms["torch"] / ms["int8"],
                         "calls": min(sum(len(a) for a in s) for s in samples.values())})
            print(f"  batch {batch} threads {rows[-1]['threads']}: done", flush=True)
        for e in engines.values():
            e.close()
    torch.set_num_threads(default_threads)
    return rows


# -- 2. and 3. attacks -------------------------------------------------------------------------------
def interleave(cases: dict, x, y, rounds: int, judge) -> dict[str, dict]:
    """Time each case's ``fn(x, y)`` (returns x_adv as a host array) in alternating rounds after a warm-up
    call each on the first 8 examples; examples/s from the median round, ``judge(name, x_adv)`` adds
    robust accuracy (and the like)."""
    for fn in cases.values():
        fn(x[:8], y[:8])
    n = len(y)
    times: dict[str, list[float]] = {name: [] for name in cases}
    out: dict[str, dict] = {}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            adv = fn(x, y)
            times[name].append(time.perf_counter() - start)
            out[name] = judge(name, adv)
    for name, t in times.items():
        out[name].update(rate=n / statistics.median(t), best=n / min(t),
                         spread=(max(t) - min(t)) / statistics.median(t))
    return out


def batched(fn, x: torch.Tensor, y: torch.Tensor, batch: int) -> np.ndarray:
    return torch.cat([fn(x[i:i + batch], y[i:i + batch]).detach() for i in range(0, len(x), batch)]).cpu().numpy()


def attacks_vs_torchattacks(source, x_np: np.ndarray, y_np: np.ndarray, args) -> list[dict]:
    import torchattacks as ta

    from dlforge.adversarial.attacks.apgd import APGD
    from dlforge.adversarial.attacks.pgd import PGD

    model = source.model  # the one nn.Module both libraries attack
    x = torch.from_numpy(x_np).to(args.device).contiguous(memory_format=source.layout)
    y = torch.from_numpy(y_np).to(args.device)
    rng = (0.0, 1.0)
    ours = {"pgd": PGD(steps=PGD_STEPS, rel_stepsize=0.25, random_start=True, seed=0),
            "apgd": APGD(norm="linf", loss="ce", iterations=args.apgd_steps, restarts=1, rho=0.75, seed=0)}
    theirs = {"pgd": ta.PGD(model, eps=EPS, alpha=0.25 * EPS, steps=PGD_STEPS, random_start=True),
              "apgd": ta.APGD(model, norm="Linf", eps=EPS, steps=args.apgd_steps, n_restarts=1, seed=0, loss="ce",
                              eot_iter=1, rho=0.75)}

    def judge(_, adv):
        logits = torch.from_numpy(source.predict(adv))
        return {"robust": float((logits.argmax(1).numpy() == y_np).mean()),
                "loss": float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y_np)))}

    rows = []
    for name, label in (("pgd", f"PGD-{PGD_STEPS}"), ("apgd", f"APGD-CE-{args.apgd_steps}")):
        res = interleave({"dlforge": lambda xs, ys, a=ours[name]: batched(
                              lambda xb, yb: a.run(model, xb, yb, eps=EPS, value_range=rng), xs, ys, args.batch_size),
                          "torchattacks": lambda xs, ys, a=theirs[name]: batched(a, xs, ys, args.batch_size)},
                         x, y, args.rounds, judge)
        rows.append({"attack": label, "dl_rate": res["dlforge"]["rate"], "ta_rate": res["torchattacks"]["rate"],
                     "ratio": res["dlforge"]["rate"] / res["torchattacks"]["rate"],
                     "ratio_best": res["dlforge"]["best"] / res["torchattacks"]["best"],
                     "dl_robust": res["dlforge"]["robust"], "ta_robust": res["torchattacks"]["robust"],
                     "dl_loss": res["dlforge"]["loss"], "ta_loss": res["torchattacks"]["loss"],
                     "spread": max(res["dlforge"]["spread"], res["torchattacks"]["spread"])})
        print(f"  {label}: done", flush=True)
    return rows


def engine_graph_pgd(source, engines: dict, x_np: np.ndarray, y_np: np.ndarray, args) -> list[dict]:
    from dlforge.adversarial.attacks.pgd import PGD
    from dlforge.adversarial.attacks.torch_model import TorchModel
    from dlforge.onnx_torch import torch_module_from_onnx

    models = {"source (PyTorch)": (source, engines["fp32"]),
              **{f"{p} engine graph": (TorchModel(torch_module_from_onnx(e.artifact.payload_path), args.device), e)
                 for p, e in engines.items()}}
    attack = PGD(steps=PGD_STEPS, rel_stepsize=0.25, random_start=True, seed=0)
    cases = {name: (lambda xs, ys, m=m: m.attack(attack, xs, ys, eps=EPS, value_range=(0.0, 1.0),
                                                 batch_size=args.batch_size)) for name, (m, _) in models.items()}
    res = interleave(cases, x_np, y_np, args.rounds,
                     lambda name, adv: {"robust": float((models[name][1].predict(adv).argmax(1) == y_np).mean())})
    base = res["source (PyTorch)"]["rate"]
    best = res["source (PyTorch)"]["best"]
    return [{"route": name, "judged_on": models[name][1].label, "rate": r["rate"], "ratio": r["rate"] / base,
             "ratio_best": r["best"] / best,
             "robust": r["robust"], "spread": r["spread"],
             "goal": (("meets" if r["rate"] / base >= 0.8 else "MISSES") + " >= 0.8x") if name.startswith("fp32")
             else "-"} for name, r in res.items()]


# -- 4. audit ----------------------------------------------------------------------------------------
def audit_wall(paths: dict[str, Path], args) -> tuple[list[dict], str]:
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)

    def command(p: str) -> list[str]:
        return ["audit", str(paths[p]), "--source", str(paths["checkpoint"]), "--attacks", "autoattack", "--eps",
                AUDIT_EPS, "--samples", str(args.autoattack_samples), "--device", args.device, "--json"]

    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    reports: dict[str, dict] = {}
    for _ in range(args.autoattack_rounds):
        for p, t in times.items():
            start = time.perf_counter()
            done = dlforge_cli(*command(p), env=env)
            t.append(time.perf_counter() - start)
            reports[p] = json.loads(done.stdout)
    rows = []
    for p, t in times.items():
        report, wall = reports[p], statistics.median(t)
        robust = {f"{r['route']} {r['target']}": r["robust_accuracy"] for r in report["rows"]
                  if r["attack"] == "autoattack" and r["eps"] > 0}
        rows.append({"engine": paths[p].name, "samples": report["samples"], "wall": wall,
                     "per100": wall * 100 / report["samples"],
                     "robust": ", ".join(f"{k} {v:.4f}" for k, v in robust.items())})
    shown = (f"OMP_NUM_THREADS={args.threads} " if args.threads else "") + "dlforge " + \
        " ".join(shlex.quote(a) for a in command("fp32")[:-1])
    return rows, shown


def main() -> None:
    ap = attack_parser(__doc__, samples=64, run_help="a directory with the ResNet-20 checkpoint and its fp32 and "
                       "INT8 ONNX Runtime engines (default: built now in a temporary directory)")
    ap.add_argument("--apgd-steps", type=int, default=10,
                    help="APGD-CE iterations on both sides (torchattacks' default; dlforge's and AutoAttack's is 100)")
    ap.add_argument("--autoattack-samples", type=int, default=20, help="--samples of the audit runs")
    ap.add_argument("--autoattack-rounds", type=int, default=1, help="audit runs per engine (median)")
    ap.add_argument("--skip-autoattack", action="store_true", help="skip the audit wall-time section")
    args = parse_attack_args(ap)
    t_start = time.perf_counter()

    from dlforge.artifact import open_artifact
    from dlforge.train.checkpoint import attack_model
    from dlforge.data import load_training_data
    from dlforge.reporting import Column, format_table
    from dlforge.runtime.deployed import open_deployed

    for line in machine_facts(args):
        print(line)
    tmp = tempfile.TemporaryDirectory(prefix="dlforge-resnet-speed-")
    if args.run:
        run = Path(args.run)
    else:
        print("building the ResNet-20 run with the dlforge CLI ...", flush=True)
        run = build_run(Path(tmp.name))
    paths = {role: find(run, role) for role in LAYOUT}
    ckpt = open_artifact(paths["checkpoint"], ["checkpoint"])
    ds = load_training_data(ckpt)
    source = attack_model(ckpt, args.device)
    correct = source.predict(ds.x_test).argmax(1) == ds.y_test
    if not correct.any():
        raise SystemExit("the checkpoint classifies none of the test images correctly")
    x_img, y_img = ds.x_test[correct], ds.y_test[correct]
    x_np, y_np = tile(x_img, args.samples), tile(y_img, args.samples)
    print(f"run: {run} ({', '.join(f'{r}={p.name}' for r, p in paths.items())}); data {ds.name}: "
          f"{int(correct.sum())} of {len(correct)} test images correctly classified by the checkpoint, tiled to each "
          f"batch; {args.rounds} alternating rounds")

    def ratio(v: float) -> str:
        return f"{v:.2f}x"

    print("\n[1] latency, ms per batch (median of every timed call; ratios are latency ratios, >1 = faster)", flush=True)
    rows = latency(paths, ds.x_test, args)
    print(format_table(rows, [Column("batch", align=">"), Column("threads", align=">"),
                              Column("torch", "torch eager ms", ".3f", ">"), Column("fp32", "ORT fp32 ms", ".3f", ">"),
                              Column("int8", "ORT int8 ms", ".3f", ">"),
                              Column("int8_x", "INT8 vs fp32", ratio, ">"),
                              Column("fp32_vs_torch", "ORT fp32 vs torch", ratio, ">"),
                              Column("int8_vs_torch", "ORT int8 vs torch", ratio, ">"),
                              Column("calls", "calls/target", "d", ">")]))
    print("  INT8 vs fp32 = fp32 ms / int8 ms; ORT vs torch = torch ms / ORT ms. torch: the checkpoint's model, eval, "
          "inference_mode, contiguous NCHW; ORT: engine.session.run on the same array.")

    print(f"\n[2] attacks on the source model, {len(y_np)} examples in batches of {args.batch_size}, eps 8/255 "
          "(examples/s from the median round)", flush=True)
    rows = attacks_vs_torchattacks(source, x_np, y_np, args)
    print(format_table(rows, [Column("attack"), Column("dl_rate", "dlforge ex/s", ".1f", ">"),
                              Column("ta_rate", "torchattacks ex/s", ".1f", ">"),
                              Column("ratio", "dlforge/torchattacks", ratio, ">"),
                              Column("ratio_best", "(fastest rounds)", ratio, ">"),
                              Column("dl_robust", "robust acc dlforge", ".4f", ">"),
                              Column("ta_robust", "robust acc torchattacks", ".4f", ">"),
                              Column("dl_loss", "CE dlforge", ".3f", ">"), Column("ta_loss", "CE torchattacks", ".3f", ">"),
                              Column("spread", "max round spread", ".0%", ">")]))
    print("  ratios: of the median rounds' examples/s; (fastest rounds): of the fastest rounds' (less exposed to other "
          "load on the machine); round spread: (slowest - fastest) / median round.")
    print(f"  both sides: the same nn.Module object (TorchModel: eval, frozen parameters, channels-last), the same "
          f"channels-last input tensors, L-inf eps {EPS:.6f}, inputs in [0, 1].\n"
          f"  PGD: dlforge PGD(steps={PGD_STEPS}, rel_stepsize=0.25, random_start=True, seed=0) vs torchattacks "
          f"PGD(eps=8/255, alpha=2/255, steps={PGD_STEPS}, random_start=True); step 2/255, cross-entropy (dlforge "
          "sums it over the batch, torchattacks averages: the same sign of the gradient), uniform start in the ball "
          "(dlforge from its own seeded generator, torchattacks from torch's global one).\n"
          f"  APGD-CE: dlforge APGD(loss='ce', iterations={args.apgd_steps}, restarts=1, rho=0.75, seed=0) vs "
          f"torchattacks APGD(norm='Linf', steps={args.apgd_steps}, n_restarts=1, loss='ce', eot_iter=1, rho=0.75, "
          "seed=0); torchattacks also runs one clean forward pass and attacks only the inputs it classifies correctly "
          "(here: all of them). CE: mean cross-entropy of the source on the returned x_adv (APGD returns the clean "
          "input where it found nothing and the last misclassified iterate otherwise, so its CE is not a maximum).")

    print(f"\n[3] dlforge PGD-{PGD_STEPS} through the engine graphs (torch_module_from_onnx of each engine's "
          f"model.onnx) vs through the PyTorch source, {len(y_np)} examples", flush=True)
    engines = {p: open_deployed(paths[p], device=args.device) for p in ("fp32", "int8")}
    rows = engine_graph_pgd(source, engines, x_np, y_np, args)
    for e in engines.values():
        e.close()
    print(format_table(rows, [Column("route"), Column("rate", "ex/s", ".1f", ">"), Column("ratio", "vs source", ratio, ">"),
                              Column("ratio_best", "(fastest rounds)", ratio, ">"),
                              Column("robust", "robust acc", ".4f", ">"),
                              Column("judged_on", "judged on engine"), Column("spread", "round spread", ".0%", ">"),
                              Column("goal", "goal")]))
    print("  same PGD (seed 0, step 2/255), same inputs; INT8 graph: exact INT8 forward, straight-through gradients "
          "through quantize/dequantize.")

    if args.skip_autoattack:
        print("\n[4] audit wall time: skipped (--skip-autoattack)")
    else:
        print(f"\n[4] `dlforge audit` wall time (subprocess, {args.autoattack_rounds} run(s) per engine, alternating)",
              flush=True)
        rows, shown = audit_wall(paths, args)
        print(f"  command: {shown} (+ --json, parsed for the counts)")
        print(format_table(rows, [Column("engine"), Column("samples", "images", "d", ">"),
                                  Column("wall", "wall s", ".1f", ">"), Column("per100", "s per 100 images", ".1f", ">"),
                                  Column("robust", "robust accuracy (route target)")]))
        short = [r for r in rows if r["samples"] < args.autoattack_samples]
        print("  each audit runs AutoAttack (APGD-CE, APGD-T, FAB-T, Square) on the source (white-box, then transfer "
              "to the engine) and on the engine's own graph (white-box (engine)), plus its checks; the wall time "
              "includes interpreter start-up, loading and graph conversion, which the per-100 figure scales too."
              + (f" The dataset holds only {short[0]['samples']} test images: the audit attacked that many, not "
                 f"{args.autoattack_samples}." if short else ""))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; load average at the end {load}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
