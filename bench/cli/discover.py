"""``list`` and ``schema``: the names a suite can use, the shipped suites, and the suite file schema."""

from __future__ import annotations

from pathlib import Path

import typer

from bench.cli.output import guard, table

list_app = typer.Typer(help="Discover names a suite can use (backbones, datasets, strategies) and shipped suites.", no_args_is_help=True)


def schema() -> None:
    """Print the JSON Schema of suite files, for editors: transfer-bench schema > suites/suite.schema.json"""
    import json

    from bench.suite.files import suite_json_schema

    typer.echo(json.dumps(suite_json_schema(), indent=2))


@list_app.command("suites")
@guard
def list_suites_command(
    directory: Path = typer.Argument(Path("suites"), help="Folder of suite files."),
) -> None:
    """Suite files in a folder: name, cells once every sweep has chosen, description."""
    from bench.suite.files import list_suites

    rows = []
    for entry in list_suites(directory):
        if entry.error:
            rows.append((str(entry.path), entry.name, "-", f"does not load: {entry.error}"))
        else:
            rows.append((str(entry.path), entry.name, str(entry.cells), entry.description))
    typer.echo(table(("file", "name", "cells", "description"), rows) if rows else f"no suite files in {directory}")


@list_app.command("backbones")
def list_backbones_command(
    pattern: str = typer.Argument("*", help="Shell-style filter, e.g. 'resnet*' or 'test_*'."),
    library: str = typer.Option("timm", help="timm or torchvision."),
    pretrained: bool = typer.Option(False, help="timm: list pretrained tags (name.tag) instead."),
) -> None:
    """Backbone names (timm by default; torchvision ones are written torchvision:NAME)."""
    from bench.backbones import list_backbones

    if pretrained and library == "timm":
        import timm

        names = timm.list_pretrained(pattern)
    else:
        names = list_backbones(pattern, library)
    typer.echo("\n".join(names) if names else f"no {library} backbone matches {pattern!r}")


@list_app.command("datasets")
def list_datasets_command() -> None:
    """Dataset names a suite's datasets[].name can take."""
    from bench.data import describe_datasets

    for name, text in describe_datasets().items():
        typer.echo(f"{name:16} {text}")


@list_app.command("strategies")
def list_strategies_command() -> None:
    """Strategies and their parameters."""
    from bench.strategies import STRATEGIES

    for name, strategy in STRATEGIES.items():
        params = ", ".join(f"{k}={d}" for k, (_, d) in strategy.parameters.items())
        typer.echo(f"{name:10} {strategy.summary}" + (f"  [params: {params}]" if params else ""))
