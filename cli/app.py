"""Root command group: workspace selection, quiet mode, and one-line errors.

Commands parse their options, call one ``synthdb`` function and print its result; nothing else.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from synthdb import __version__
from synthdb.context import Context
from synthdb.errors import SynthdbError


@dataclass
class Options:
    workspace: str | None
    quiet: bool

    def open(self) -> Context:
        return Context.open(self.workspace)


def _set_option(ctx: click.Context, param: click.Parameter, value: object) -> None:
    if value not in (None, False):
        setattr(ctx.find_object(Options), param.name, value)


def pass_options(command):  # noqa: ANN001, ANN201 - a click decorator
    """Pass the ``Options`` and accept --workspace/--quiet after the command name too."""
    command = click.make_pass_decorator(Options)(command)
    command = click.option(
        "--quiet", "-q", is_flag=True, expose_value=False, callback=_set_option, help="No progress bars."
    )(command)
    return click.option(
        "--workspace",
        "-w",
        type=click.Path(file_okay=False),
        expose_value=False,
        callback=_set_option,
        help="Workspace directory.",
    )(command)


class Group(click.Group):
    """Turns user-fixable errors into ``error: ...`` on one line and exit status 1."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except SynthdbError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=Group)
@click.option(
    "--workspace",
    "-w",
    envvar="SYNTHDB_WORKSPACE",
    type=click.Path(file_okay=False),
    help="Workspace directory (default: $SYNTHDB_WORKSPACE, else the nearest parent with synthdb.toml).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.version_option(__version__, prog_name="synthdb")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, quiet: bool) -> None:
    """Build, catalog and audit face-recognition datasets, genuine and synthetic."""
    ctx.obj = Options(workspace=workspace, quiet=quiet)


def echo_rows(rows: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")
