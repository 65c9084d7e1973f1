"""PyTorch state dicts as users have them: read without running code, fixed up as documented, strict otherwise."""

from __future__ import annotations

import collections
import json
import os

import pytest
import torch
from click.testing import CliRunner

from dlforge.cli import cli
from dlforge.errors import InputError
from dlforge.train.state_dict import fit_state_dict, read_state_dict
from dlforge_models import create_model

MARKER = "dlforge-test-pwned"


class _Hostile:
    """Pickles to a call of os.system: what torch.load without weights_only would run."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _net():
    return create_model("resnet20", input_shape=(3, 8, 8), num_classes=10).eval()


def _old_style(state: dict) -> dict:
    """As saved by DataParallel under older PyTorch, nested beside training bookkeeping."""
    kept = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return {"state_dict": collections.OrderedDict(kept), "best_prec1": 91.7, "epoch": 200}


def test_a_hostile_pickle_is_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _net().state_dict(), "payload": _Hostile()}, path)
    with pytest.raises(InputError, match="never unpickles code"):
        read_state_dict(path)
    assert not (tmp_path / MARKER).exists()
    # and from the CLI: one line, exit 2, nothing written, the marker never created
    out = tmp_path / "ckpt"
    result = CliRunner().invoke(cli, ["import", "resnet20", "--weights", str(path), "--input-shape", "3,8,8",
                                      "--num-classes", "10", "-o", str(out)])
    assert result.exit_code == 2 and "never unpickles code" in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / MARKER).exists()


def test_nested_prefixed_old_checkpoint_loads_with_each_fixup_recorded(tmp_path):
    reference = _net()
    for p in reference.parameters():
        torch.nn.init.normal_(p)
    path = tmp_path / "resnet.th"
    torch.save(_old_style(reference.state_dict()), path)
    state, fixups = fit_state_dict(read_state_dict(path), _net().state_dict())
    assert len(fixups) == 3
    assert "'state_dict'" in fixups[0] and "'module.'" in fixups[1] and "19 BatchNorm" in fixups[2]
    model = _net()
    model.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(model(x), reference(x))

    out = tmp_path / "ckpt"
    result = CliRunner().invoke(cli, ["import", "resnet20", "--weights", str(path), "--input-shape", "3,8,8",
                                      "--num-classes", "10", "-o", str(out)])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    assert card["weights"]["fixups"] == fixups and card["model"]["name"] == "resnet20"
    assert "architecture" not in card  # the zoo route: rebuilt by name and config


def test_what_does_not_fit_is_still_refused(tmp_path):
    state = _net().state_dict()
    del state["linear.weight"]
    path = tmp_path / "w.pt"
    torch.save(state, path)
    result = CliRunner().invoke(cli, ["import", "resnet20", "--weights", str(path), "--input-shape", "3,8,8",
                                      "--num-classes", "10", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "missing key 'linear.weight'" in result.output
    torch.save([1, 2, 3], path)
    with pytest.raises(InputError, match="holds a list, not a state dict"):
        fit_state_dict(read_state_dict(path), _net().state_dict())
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable PyTorch weights file"):
        read_state_dict(tmp_path / "junk.pth")
