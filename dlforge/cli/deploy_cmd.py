"""``dlforge deploy triton`` and ``dlforge deploy validate``."""

from __future__ import annotations

import click

from dlforge.cli import cli
from dlforge.cli.common import CommaList, emit_json, force_option, json_option, say


@cli.group("deploy")
def deploy_group() -> None:
    """Hand engines to a serving system (NVIDIA Triton Inference Server)."""


@deploy_group.command("triton")
@click.argument("engines", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "repo", required=True, type=click.Path(), help="Model repository directory to write.")
@click.option("--names", type=CommaList(), default=None,
              help="Model names, one per engine (default: MODEL-BACKEND-PRECISION from each card).")
@click.option("--max-batch-size", type=click.IntRange(min=0), default=None,
              help="Triton's max_batch_size (default: the engine's largest batch, at most 64; 0: no batching).")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True, help="Model instances (instance_group count).")
@click.option("--kind", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="Instance kind: auto is KIND_CPU for ONNX Runtime engines, KIND_GPU for TensorRT plans.")
@click.option("--dynamic-batching/--no-dynamic-batching", default=True, show_default=True,
              help="Let Triton's dynamic batcher combine requests (models with a batch dimension).")
@force_option
@json_option
def triton_command(engines, repo, names, max_batch_size, instances, kind, dynamic_batching, force, as_json) -> None:
    """Write a Triton model repository serving ENGINES (engine artifact directories): per engine a
    config.pbtxt, version folder 1 with the model file, the labels and the engine's card."""
    from dlforge.deploy.triton import validate_repository, write_repository

    written = write_repository(list(engines), repo, names=list(names) if names else None, force=force,
                               max_batch_size=max_batch_size, instances=instances, kind=kind,
                               dynamic_batching=dynamic_batching)
    _, problems = validate_repository(repo)  # what was written must validate; a failure here is a dlforge bug
    if problems:
        raise RuntimeError("the written repository does not validate: " + "; ".join(map(str, problems)))
    if as_json:
        emit_json(written)
        return
    for w in written:
        click.echo(f"{w['name']}: {w['platform']}, max_batch_size {w['max_batch_size']} <- {w['engine']}")
        if "note" in w:
            say(f"note: {w['name']}: {w['note']}")
    say(f"wrote {repo}; serve it with: tritonserver --model-repository {repo}")


@deploy_group.command("validate")
@click.argument("repo", type=click.Path())
@json_option
def validate_command(repo, as_json) -> None:
    """Check every model of the Triton repository REPO: its config.pbtxt parsed as Triton's ModelConfig,
    against the model file and the engine's card. Exit 1 when a model has a problem."""
    from dlforge.deploy.triton import validate_repository
    from dlforge.errors import StageFailed

    models, problems = validate_repository(repo)
    if as_json:
        emit_json({"models": models, "valid": not problems})
    else:
        for m in models:
            count = len(m["problems"])
            click.echo(f"{m['name']}: " + ("ok" if not count else f"{count} problem(s)"))
        for p in problems:
            click.echo(f"  {p}")
    if problems:
        raise StageFailed(f"{len(problems)} problem(s) in {len({p.model for p in problems})} of {len(models)} "
                          f"model(s) of {repo}")
