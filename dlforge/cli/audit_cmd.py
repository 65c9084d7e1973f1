"""``dlforge audit``."""

from __future__ import annotations

import click

from dlforge.adversarial.audit_options import AuditOptions
from dlforge.cli import cli
from dlforge.cli.common import emit_json, force_option, json_option, option_for, say
from dlforge.errors import StageFailed


def _list_attacks(ctx, param, value) -> None:
    if not value or ctx.resilient_parsing:
        return
    from dlforge.adversarial.attacks import ATTACKS, describe
    from dlforge.adversarial.detectors import DETECTORS
    from dlforge.adversarial.probes import PROBES
    from dlforge.reporting import format_table

    rows = [{**a, "options": ", ".join(f"{k}={v!r}" for k, v in a["options"].items())}
            for a in describe(ATTACKS) + describe(PROBES)]
    click.echo(format_table(rows, ["name", "kind", "requires", "norm", "options", "summary"]))
    click.echo("\ndetectors: " + ", ".join(DETECTORS.names()))
    ctx.exit(0)


@cli.command("audit")
@click.argument("artifacts", nargs=-1, type=click.Path())
@click.option("--list-attacks", is_flag=True, expose_value=False, is_eager=True, callback=_list_attacks,
              help="List the registered attacks and probes (what each requires, norm, options) and detectors, "
                   "then exit.")
@option_for(AuditOptions, "source", type=click.Path())
@option_for(AuditOptions, "surrogate", type=click.Path())
@option_for(AuditOptions, "attacks")
@option_for(AuditOptions, "eps")
@option_for(AuditOptions, "eps_l2")
@option_for(AuditOptions, "eps_db")
@option_for(AuditOptions, "data")
@option_for(AuditOptions, "data_dir", type=click.Path(file_okay=False))
@option_for(AuditOptions, "samples", type=int)
@option_for(AuditOptions, "start", type=int)
@option_for(AuditOptions, "per_sample", "--per-sample/--no-per-sample")
@option_for(AuditOptions, "batch_size", type=int)
@option_for(AuditOptions, "device")
@option_for(AuditOptions, "pgd_steps", type=int)
@option_for(AuditOptions, "square_queries", type=int)
@option_for(AuditOptions, "seed", type=int)
@option_for(AuditOptions, "detectors")
@option_for(AuditOptions, "adaptive")
@option_for(AuditOptions, "arms_race", type=int)
@option_for(AuditOptions, "engine_gradients")
@option_for(AuditOptions, "gap_bar", type=float)
@option_for(AuditOptions, "rebuild_check")
@click.option("--fail-under", multiple=True, metavar="[NORM:]EPS:ACC",
              help="Exit 1 when robust accuracy at EPS (L-inf, or l2:EPS:ACC) on an engine is below ACC, or when a "
                   "check says the attacks under-report (full range, masking, engine gradients): a CI gate; "
                   "repeatable.")
@click.option("-o", "--output", "out_dir", type=click.Path(), default=None,
              help="Write an audit artifact: audit.json and a self-contained report.html.")
@force_option
@json_option
def audit_command(artifacts, fail_under, out_dir, force, as_json, **settings) -> None:
    """Attack the compiled ARTIFACTS and report robust accuracy per attack and eps.

    Exit 1 when a --fail-under gate fails: the model was judged not robust enough.
    """
    from dlforge.adversarial.audit import run_audit
    from dlforge.adversarial.report import gate, parse_fail_under, table

    options = AuditOptions(**settings)
    thresholds = parse_fail_under(fail_under, {"linf": options.eps, "l2": options.eps_l2})
    if options.per_sample and not out_dir:
        from dlforge.errors import InputError

        raise InputError("--per-sample writes samples.jsonl into the audit artifact; give -o DIR")
    if out_dir:
        from dlforge.artifact import check_output

        check_output(out_dir, force=force, protect=artifacts)  # fail fast on an unusable -o
    report = run_audit(list(artifacts), options)
    if out_dir:
        from dlforge.adversarial import write_audit_artifact

        written = write_audit_artifact(report, out_dir, force=force)
        say(f"wrote {written.path}/audit.json" + (" and samples.jsonl" if options.per_sample else "")
            + " and report.html")
    if as_json:
        emit_json(report.for_terminal())
    else:
        click.echo(table(report))
    failures = gate(report, thresholds)
    if failures:
        raise StageFailed("robustness gate failed: " + "; ".join(failures))
