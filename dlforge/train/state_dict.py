"""Weights as users have them: safetensors files and PyTorch ``.pt`` / ``.pth`` / ``.th`` / ``.bin`` state dicts.

A PyTorch file is read with ``torch.load(..., weights_only=True, map_location="cpu")``: its pickle
may only rebuild tensors and plain containers, never call code, so a hostile file is refused
rather than run. Three shapes of real checkpoints are fixed up, each recorded so the card can say
what was done:

- **nested**: the state dict under a key (``state_dict``, ``model_state_dict``, ``model``,
  ``net``, ``weights``) beside training bookkeeping such as ``best_prec1`` or ``optimizer``;
- **``module.`` prefixes**: saved from ``nn.DataParallel`` / ``DistributedDataParallel``, every key
  starts with ``module.``; the prefix is dropped where the model's own keys do not have it;
- **BatchNorm's ``num_batches_tracked``**: older PyTorch did not save it; torch itself fills it with 0
  when it loads such a file (``_BatchNorm._load_from_state_dict``), and so does this.

Anything else that does not fit (a missing weight, a shape mismatch) is refused as before: the load
stays strict.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlforge.errors import InputError, require

TORCH_SUFFIXES = (".pt", ".pth", ".th", ".bin", ".ckpt")
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile


DEFAULT_FIX = "give the file torch.save(model.state_dict(), path) or safetensors wrote"


def read_state_dict(path: str | os.PathLike, *, error: type[InputError] = InputError, fix: str = DEFAULT_FIX):
    """What a safetensors or PyTorch weights file holds (nothing unpickled): a ``{key: tensor}`` dict, or for a
    PyTorch file whatever plain container it saved; :func:`fit_state_dict` finds the state dict in it."""
    path = Path(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        return _torch_file(path, error, fix)
    require("safetensors", "toolkit", "loading a checkpoint")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(f"{path} is not a safetensors weights file "
                    f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {fix}") from exc


def _torch_file(path: Path, error: type[InputError], fix: str) -> dict:
    import pickle

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _torch_reason(str(exc))
        if "GLOBAL" in reason or "global" in reason:
            raise error(f"{path} holds more than tensors and plain containers ({reason}); dlforge never unpickles "
                        "code: save the model's state_dict (torch.save(model.state_dict(), path)) or a safetensors "
                        "file") from None
        raise error(f"{path} is not a readable PyTorch weights file ({reason}); {fix}") from None
    except (OSError, RuntimeError, EOFError, ValueError, KeyError) as exc:
        raise error(f"{path} is not a readable PyTorch weights file ({_torch_reason(str(exc))}); {fix}") from None
    return obj


def _torch_reason(message: str) -> str:
    """The line of torch.load's message that says what was wrong (not its advice to turn weights_only off)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line or "invalid load key" in line:
            return line[:200]
    useful = [line for line in lines if "weights_only" not in line and "torch.load" not in line]
    return (useful[0] if useful else lines[0] if lines else "unreadable")[:200]


def fit_state_dict(state, expected: dict) -> tuple[dict, list[str]]:
    """``state`` (from :func:`read_state_dict`) fixed up to ``expected``'s keys (a model's ``state_dict()``);
    returns ``(state dict, the fix-ups applied, as card-ready sentences)``. Keys it cannot account for are
    left for the strict check to report."""
    import torch

    fixups: list[str] = []
    if isinstance(state, dict) and not _is_tensor_dict(state):
        for key in NESTED_KEYS:
            if isinstance(state.get(key), dict) and _is_tensor_dict(state[key]):
                others = sorted(str(k) for k in state if k != key)
                fixups.append(f"state dict taken from key {key!r} of the file"
                              + (f" (beside {', '.join(others[:4])})" if others else ""))
                state = state[key]
                break
    if not isinstance(state, dict) or not _is_tensor_dict(state):
        kind = type(state).__name__
        keys = f" with keys {', '.join(map(str, list(state)[:5]))}" if isinstance(state, dict) else ""
        raise InputError(f"the weights file holds a {kind}{keys}, not a state dict of tensors; save "
                         "model.state_dict(), or nest it under 'state_dict'")
    state = dict(state)
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
            state = {k[len(prefix):]: v for k, v in state.items()}
            fixups.append(f"prefix {prefix!r} removed from every key (saved from a wrapped model)")
    filled = [k for k in expected if k.endswith("num_batches_tracked") and k not in state
              and k.rsplit(".", 1)[0] + ".running_mean" in state]
    for k in filled:
        state[k] = torch.zeros((), dtype=torch.long)
    if filled:
        fixups.append(f"{len(filled)} BatchNorm num_batches_tracked buffer(s) filled with 0, as torch does for "
                      "checkpoints saved before it kept them")
    return state, fixups


def _is_tensor_dict(d: dict) -> bool:
    import torch

    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())
