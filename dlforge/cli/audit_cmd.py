"""``dlforge audit``."""

from __future__ import annotations


import click

from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option, say
from dlforge.errors import InputError, StageFailed


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise InputError(f"{flag} expects comma-separated numbers such as 0,0.1,0.3, got {text!r}") from exc


@cli.command("audit")
@click.argument("artifacts", nargs=-1, type=click.Path())
@click.option("--source", type=click.Path(), default=None,
              help="The engine's PyTorch checkpoint, for gradient attacks (default: found up the lineage).")
@click.option("--surrogate", type=click.Path(), default=None, help="Another model's checkpoint to transfer from.")
@click.option("--attacks", default="fgsm,pgd,square", show_default=True, help="fgsm, pgd, pgd-l2, square.")
@click.option("--eps", default="0,0.05,0.1,0.2,0.3", show_default=True, help="L-inf budgets.")
@click.option("--eps-l2", default="0,0.5,1,2,3", show_default=True, help="L2 budgets (pgd-l2).")
@click.option("--data", default=None, help="Dataset to attack on (default: the model's own test split).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--samples", type=int, default=500, show_default=True, help="Test images to attack.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where gradient attacks run.")
@click.option("--pgd-steps", type=int, default=40, show_default=True)
@click.option("--square-queries", type=int, default=1000, show_default=True, help="Query budget per image.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--detectors", default="", help="Input filters to evaluate: feature-squeezing, autoencoder=ENGINE_DIR (comma-separated).")
@click.option("--fail-under", multiple=True, metavar="EPS:ACC",
              help="Exit 1 when robust accuracy at EPS on an engine is below ACC (a CI gate); repeatable.")
@click.option("-o", "--output", "out_dir", type=click.Path(), default=None,
              help="Write an audit artifact: audit.json and a self-contained report.html.")
@force_option
@json_option
def audit_command(artifacts, source, surrogate, attacks, eps, eps_l2, data, data_dir, samples, batch_size, device,
                  pgd_steps, square_queries, seed, detectors, fail_under, out_dir, force, as_json) -> None:
    """Attack the compiled ARTIFACTS and report robust accuracy per attack and eps."""
    from dlforge.adversarial.audit import run_audit
    from dlforge.adversarial.report import gate, parse_fail_under, table

    thresholds = parse_fail_under(fail_under)
    if out_dir:
        from dlforge.artifact import ArtifactWriter

        ArtifactWriter(out_dir, force=force).discard()  # fail fast on an unusable -o
    report = run_audit(
        list(artifacts), source=source, surrogate=surrogate,
        attacks=tuple(a.strip() for a in attacks.split(",") if a.strip()), eps=_floats(eps, "--eps"),
        eps_l2=_floats(eps_l2, "--eps-l2"), data=data, data_dir=data_dir, samples=samples, batch_size=batch_size,
        device=device, pgd_steps=pgd_steps, square_queries=square_queries, seed=seed,
        detectors=tuple(d.strip() for d in detectors.split(",") if d.strip()))
    if out_dir:
        from dlforge.adversarial import write_audit_artifact

        written = write_audit_artifact(report, out_dir, force=force)
        say(f"wrote {written.path}/audit.json and report.html")
    if as_json:
        emit_json({k: v for k, v in report.items() if k != "gallery"})
    else:
        click.echo(table(report))
    failures = gate(report, thresholds)
    if failures:
        raise StageFailed("robustness gate failed: " + "; ".join(failures))


