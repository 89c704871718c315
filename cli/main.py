"""Entry point of the ``synthdb`` console script: the root group with every command registered."""

from synthdb.cli import face_cmds, import_cmds, store_cmds, workspace_cmds  # noqa: F401 - registers commands
from synthdb.cli.app import cli


def main() -> None:
    cli(prog_name="synthdb")


if __name__ == "__main__":
    main()
