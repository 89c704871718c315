"""Root command group: workspace selection, quiet mode, and one-line errors.

Commands parse their options, call one ``synthdb`` function and print its result; nothing else.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import click

from synthdb import __version__
from synthdb.catalog.runs import RunInterrupted
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
    """Turns user-fixable errors into ``error: ...`` on one line and exit status 1, and Ctrl-C into one line
    naming the interrupted run and how to continue it (exit status 130, the shell's for SIGINT)."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except SynthdbError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except BrokenPipeError:  # the reader left (`| head`): nothing more to say, and nowhere to say it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:  # a path given that cannot be made, read or written (--out /proc/nope)
            where = f" {exc.filename}" if exc.filename else ""
            fix = "check that the path exists and that you may write there"
            click.echo(f"error: cannot use{where} ({exc.strerror or exc}): {fix}", err=True)
            sys.exit(1)
        except RunInterrupted as exc:
            click.echo(f"Ctrl-C: {exc}", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("Ctrl-C: interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
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
