"""What this machine can run: packages, ONNX Runtime providers, CUDA devices, TensorRT, CPU features."""

from __future__ import annotations

import importlib
import shutil
import subprocess

from dlforge.env import cpu_flags, environment, package_version

def _ort() -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"installed": False, "fix": "pip install onnxruntime"}
    return {"installed": True, "version": ort.__version__, "providers": ort.get_available_providers()}


def _cuda() -> dict:
    info: dict = {"nvidia_smi": bool(shutil.which("nvidia-smi")), "devices": []}
    if info["nvidia_smi"]:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True).stdout
            for line in out.strip().splitlines():
                name, cc, driver, mem = (s.strip() for s in line.split(","))
                info["devices"].append({"name": name, "compute_capability": cc, "driver": driver, "memory": mem})
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            info["error"] = str(exc)
    if package_version("torch"):
        try:
            torch = importlib.import_module("torch")
            info["torch_cuda"] = torch.version.cuda
            info["torch_sees_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except ImportError:
            pass
    return info


def _tensorrt() -> dict:
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return {"installed": False, "fix": "pip install 'dlforge[tensorrt]' (needs an NVIDIA GPU and driver)"}
    except Exception as exc:  # an installed but broken TensorRT (missing libraries) is worth reporting
        return {"installed": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"installed": True, "version": trt.__version__}


def diagnose() -> dict:
    return {
        "env": environment(),
        "cpu_flags": cpu_flags(),
        "onnxruntime": _ort(),
        "cuda": _cuda(),
        "tensorrt": _tensorrt(),
        "toolkit": {name: package_version(name) for name in
                    ("torch", "onnx", "onnxscript", "click", "scikit-learn", "tqdm", "matplotlib", "safetensors")},
    }


def render(d: dict) -> str:
    env = d["env"]
    lines = [f"python        {env['python']} on {env['platform']}",
             f"cpu           {env['cpu']} x{env['cpu_count']}  flags: {', '.join(d['cpu_flags']) or 'none of note'}"]
    if "avx512_vnni" in d["cpu_flags"] or "avx_vnni" in d["cpu_flags"] or "amx_int8" in d["cpu_flags"]:
        lines.append("              INT8 dot-product instructions present: INT8 engines may beat fp32 (measure)")
    else:
        lines.append("              no VNNI/AMX: INT8 engines are often slower than fp32 on this CPU")
    o = d["onnxruntime"]
    lines.append(f"onnxruntime   {o.get('version', 'not installed')}  providers: {', '.join(o.get('providers', []))}")
    c = d["cuda"]
    gpus = "; ".join(f"{g['name']} (sm {g['compute_capability']}, driver {g['driver']})" for g in c["devices"])
    lines.append(f"cuda          {gpus or 'no NVIDIA GPU found'}")
    t = d["tensorrt"]
    lines.append(f"tensorrt      {t.get('version') or 'not installed'}" + (f"  ({t['fix']})" if t.get("fix") else ""))
    missing = [k for k, v in d["toolkit"].items() if v is None]
    present = ", ".join(f"{k} {v}" for k, v in d["toolkit"].items() if v)
    lines.append(f"toolkit       {present}")
    if missing:
        lines.append(f"              missing: {', '.join(missing)} (pip install 'dlforge[toolkit]')")
    return "\n".join(lines)
