"""`fer registry ...`: list, show, register, promote and roll back model versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fer.cli.common import RegistryOpt, fail, open_registry_for

registry_app = typer.Typer(
    help="The model registry: list, register, promote, rollback, show.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@registry_app.command("list")
def registry_list(name: Annotated[str | None, typer.Argument()] = None, registry: RegistryOpt = None) -> None:
    """List versions with their aliases and validation/test accuracy."""
    from fer.registry import RegistryError

    try:
        reg = open_registry_for(registry)
        versions = reg.list(name)
    except RegistryError as e:
        fail(str(e))
    if not versions and name:
        known = getattr(reg, "names", lambda: [])()
        fail(f"no model named {name!r} in the registry" + (f" (models: {', '.join(known)})" if known else ""))
    if not versions:
        typer.echo("no models registered")
    for mv in versions:
        m = mv.metrics
        acc = " ".join(f"{k}={m[k]:.4f}" for k in ("val_acc", "test_acc") if k in m)
        typer.echo(f"{mv.ref:24s} {','.join(mv.aliases) or '-':12s} {acc}  {mv.card.get('created', '')}")


@registry_app.command("show")
def registry_show(ref: str, registry: RegistryOpt = None) -> None:
    """Show a version's card: `name@production` or `name@3`."""
    from fer.registry import RegistryError

    try:
        mv = open_registry_for(registry).resolve(ref)
    except RegistryError as e:
        fail(str(e))
    typer.echo(json.dumps({"ref": mv.ref, "aliases": mv.aliases, "path": str(mv.path), **mv.card}, indent=2))


@registry_app.command("register")
def registry_register(
    artifact: Annotated[Path, typer.Argument(help="artifact folder (model.onnx + meta.json)")],
    name: Annotated[str, typer.Option(help="model name")] = "fer-resnet18",
    source_run: Annotated[str | None, typer.Option(help="run this artifact came from")] = None,
    promote: Annotated[bool, typer.Option(help="also promote it to production")] = False,
    registry: RegistryOpt = None,
) -> None:
    """Register an artifact as the next version of a model."""
    from fer.registry import RegistryError

    try:
        reg = open_registry_for(registry)
        mv = reg.register(name, artifact, source_run=source_run)
        typer.echo(f"registered {mv.ref}")
        if promote:
            reg.promote(name, mv.version)
            typer.echo(f"promoted {mv.ref} to production")
    except RegistryError as e:
        fail(str(e))


@registry_app.command("promote")
def registry_promote(
    ref: Annotated[str, typer.Argument(help="name@version")],
    alias: Annotated[str, typer.Option(help="alias to move")] = "production",
    force: Annotated[bool, typer.Option(help="skip the gate that refuses a worse model (needs --reason)")] = False,
    reason: Annotated[str | None, typer.Option(help="why the gate is overridden; kept in the history")] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="FER-2013: also run the behavioural model tests as part of the gate")
    ] = None,
    ferplus: Annotated[Path | None, typer.Option(help="fer2013new.csv, for the clear-faces test")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Point an alias (default production) at a version.

    The gate refuses a candidate whose validation accuracy is below the current holder's and,
    with --data, one that fails its behavioural model tests (see fer test-model). With --data the
    candidate and the holder are also measured side by side on PublicTest on this machine, and
    those numbers decide instead of the stored ones (int8 answers depend on the CPU)."""
    from fer.registry import RegistryError, parse_ref

    try:
        name, version = parse_ref(ref)
        if not isinstance(version, int):
            fail("promote takes name@VERSION, e.g. fer-resnet18@3")
        if force and not reason:
            fail('--force needs --reason "why the gate is overridden" (it is recorded with your user name)')
        reg = open_registry_for(registry)
        report = evaluation = None
        if data and not force:
            report, evaluation = _measured_gate(reg, ref, name, alias, data, ferplus)
        mv = reg.promote(name, version, alias, force=force, model_tests=report, reason=reason, evaluation=evaluation)
    except RegistryError as e:
        fail(str(e))
    typer.echo(f"{mv.ref} is now {alias}")


def _measured_gate(reg, ref: str, name: str, alias: str, data: str, ferplus: Path | None):
    """The model-test report of `ref`, and it and the alias holder measured on PublicTest here."""
    from fer.cli.infer import _fer2013, model_test_report
    from fer.evaluate import gate_metrics
    from fer.registry import ModelNotFound

    ds = _fer2013(data)
    candidate = reg.resolve(ref)
    report = model_test_report(candidate.path, data, ferplus, ds=ds)
    typer.echo(f"model tests: {'passed' if report['passed'] else 'FAILED: ' + ', '.join(report['failed'])}")
    try:
        holder = reg.resolve(f"{name}@{alias}")
    except ModelNotFound:
        return report, None
    if holder.version == candidate.version:
        return report, None
    evaluation = {"candidate": gate_metrics(candidate.path, ds), "baseline": gate_metrics(holder.path, ds)}
    evaluation["baseline"]["ref"] = holder.ref
    c, b = evaluation["candidate"], evaluation["baseline"]
    typer.echo(f"measured on PublicTest here: {ref} val_acc {c['val_acc']:.4f} vs {holder.ref} {b['val_acc']:.4f}")
    return report, evaluation


@registry_app.command("rollback")
def registry_rollback(
    name: str, alias: Annotated[str, typer.Option()] = "production", registry: RegistryOpt = None
) -> None:
    """Move an alias back to the version it had before its last promotion."""
    from fer.registry import RegistryError

    try:
        mv = open_registry_for(registry).rollback(name, alias)
    except RegistryError as e:
        fail(str(e))
    typer.echo(f"{alias} is back on {mv.ref}")
