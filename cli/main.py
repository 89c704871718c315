"""Entry point of the ``synthdb`` console script: the root group with every command registered."""

from synthdb.cli import (  # noqa: F401 - importing a module registers its commands
    analysis_cmds,
    dataset_cmds,
    export_cmds,
    face_cmds,
    generate_cmds,
    import_cmds,
    latent_cmds,
    model_cmds,
    project_cmds,
    run_cmds,
    store_cmds,
    workspace_cmds,
)
from synthdb.cli.app import cli


def main() -> None:
    cli(prog_name="synthdb")


if __name__ == "__main__":
    main()
