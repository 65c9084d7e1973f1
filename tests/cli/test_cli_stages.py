import json

from click.testing import CliRunner

from dlforge.cli import cli


def test_train_then_inspect_json(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ckpt"
    result = runner.invoke(cli, ["train", "mlp", "--epochs", "3", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["kind"] == "checkpoint" and card["metrics"]["test_accuracy"] > 0.9
    assert "epoch 3:" in result.stderr
    info = json.loads(runner.invoke(cli, ["inspect", str(out), "--json"]).stdout)
    assert info["kind"] == "checkpoint" and info["sha256"] == card["sha256"]
    text = runner.invoke(cli, ["inspect", str(out)]).stdout
    assert "input      input: float32['batch', 1, 8, 8]" in text
