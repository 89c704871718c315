"""``synthdb runs resume ID``: rebuild a generation run from its stored params and continue it.

The committed units tell the algorithm what is done (see :mod:`synthdb.generate.units`), so resuming
is calling the algorithm again with the same params, seed and run id. A Langevin run resumes under
torchrun too, with any number of ranks (every rank calls this; rank 0 reopens the run, see
:mod:`synthdb.distributed`).
"""

from __future__ import annotations

from synthdb.catalog.runs import continue_hint, get_run
from synthdb.catalog.schema import RunKind, RunStatus
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.params import params_from


def resume_run(ctx: Context, run_id: int, quiet: bool = True) -> str:
    """Continue run ``run_id``; return a one-line description of what it finished."""
    from synthdb.generate.params import ReferenceParams, VariationParams
    from synthdb.generate.references import generate_references
    from synthdb.generate.variations import generate_variations

    run = get_run(ctx.catalog, run_id)
    if run.status == RunStatus.SUCCEEDED:
        raise SynthdbError(f"run {run_id} has succeeded already: nothing to resume")
    if run.kind == RunKind.REFERENCES:
        generate_references(ctx, ReferenceParams.from_dict(run.params), run_id, quiet)
    elif run.kind == RunKind.VARIATIONS:
        shard = (run.shard_index or 0, run.shard_count or 1)
        generate_variations(ctx, params_from(VariationParams, run.params, run_id), run_id, shard, quiet)
    elif run.kind == RunKind.PROJECT:
        from synthdb.latent.params import ProjectionParams
        from synthdb.latent.project import project

        shard = (run.shard_index or 0, run.shard_count or 1)
        project(ctx, params_from(ProjectionParams, run.params, run_id), run_id, shard, quiet)
    else:  # imports, embeds, renders...: their own command continues them
        raise SynthdbError(
            f"`runs resume` continues generation and projection runs; run {run_id} is an {run.kind} run: "
            f"{continue_hint(run)}"
        )
    return f"{run.kind} ({run.algorithm}) resumed and succeeded"
