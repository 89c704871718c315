"""``synthdb datasets list|show|rename|delete``: the datasets of a catalog, as users manage them.

Renaming and deleting change what runs refer to by name, so both are refused while a run may be writing
into (or reading) the dataset: a ``running`` run that wrote into it, or that names it in its parameters,
whose process is not known to be gone. A rename is also refused while a generation run that wrote into
the dataset is unfinished: ``synthdb runs resume`` finds its output by the name it recorded.

Deleting removes the catalog's rows in one transaction (identities, samples, issues, protocols, pairs,
shard rows and the indexes over it); the shard and index files become files no row references, which
``synthdb gc`` removes, as after any crash. Image files are never touched: a genuine dataset's belong to
the user, a generated dataset's rendered images stay in its root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from synthdb.catalog import datasets, runs
from synthdb.catalog.datasets import DatasetContents, DatasetListing, DatasetRow
from synthdb.catalog.runs import RESUMABLE, RunRow
from synthdb.catalog.schema import RunStatus
from synthdb.context import Context
from synthdb.errors import SynthdbError

NAME_PARAMS = ("name", "dataset", "query", "references", "avoid", "against", "projections")
"""Run parameters that name a dataset a run writes into or reads."""


@dataclass(frozen=True)
class DatasetDetails:
    """A dataset, what it holds, and the runs that wrote into it (oldest first)."""

    dataset: DatasetRow
    contents: DatasetContents
    writers: list[RunRow]

    @property
    def shard_files(self) -> int:
        return sum(group.shards for group in self.contents.shard_groups)

    @property
    def shard_bytes(self) -> int:
        return sum(group.bytes for group in self.contents.shard_groups)

    def describe(self) -> str:
        """``dataset 'faces' (genuine, imagefolder): 33 samples, 11 identities, 4 shard files (70 KB)``."""
        c, d = self.contents, self.dataset
        return (
            f"dataset '{d.name}' ({d.kind}, {d.source}): {c.samples} samples, {c.identities} identities, "
            f"{self.shard_files} shard files ({self.shard_bytes / 1e3:.0f} KB), {c.protocols} protocols, "
            f"{c.issues} sample issues, {c.indexes} indexes"
        )


def list_datasets(ctx: Context) -> list[DatasetListing]:
    """Every dataset of the catalog, by name, with its sample and identity counts."""
    return datasets.list_datasets(ctx.catalog)


def show_dataset(ctx: Context, name: str) -> DatasetDetails:
    """Dataset ``name``: its row, its counts and its runs (the error lists the known names)."""
    row = datasets.get_dataset(ctx.catalog, name)
    writers = runs.dataset_writers(ctx.catalog, row.id)
    return DatasetDetails(row, datasets.contents(ctx.catalog, row.id), writers)


def _check_not_in_use(ctx: Context, details: DatasetDetails, doing: str) -> None:
    """Refuse ``doing`` while a live run wrote into the dataset or names it in its parameters."""
    name = details.dataset.name
    users = [run for run in details.writers if runs.is_live(run)]
    users += [
        run
        for run in runs.running(ctx.catalog)
        if runs.is_live(run) and any(run.params.get(key) == name for key in NAME_PARAMS)
    ]
    if users:
        run = users[0]
        raise SynthdbError(
            f"run {run.id} ({run.kind}, pid {run.pid} on {run.host}) is using dataset '{name}': wait for it "
            f"to end (`synthdb runs show {run.id}`) before you {doing} it"
        )


def rename_dataset(ctx: Context, name: str, new_name: str) -> DatasetRow:
    """Rename dataset ``name`` to ``new_name``; return the renamed row."""
    details = show_dataset(ctx, name)
    _check_not_in_use(ctx, details, "rename")
    unfinished = [r for r in details.writers if r.kind in RESUMABLE and r.status != RunStatus.SUCCEEDED]
    unfinished += [  # e.g. an interrupted variations run whose --references is this dataset
        r
        for r in runs.unfinished(ctx.catalog, RESUMABLE)
        if any(r.params.get(k) == name for k in NAME_PARAMS)
    ]
    if unfinished:
        run = unfinished[-1]
        raise SynthdbError(
            f"run {run.id} ({run.kind}) is unfinished and finds dataset '{name}' by that name when resumed: "
            f"finish it with `synthdb runs resume {run.id}` (or delete its output) before renaming it"
        )
    datasets.rename(ctx.catalog, details.dataset.id, new_name)
    return datasets.get_dataset(ctx.catalog, new_name)


def delete_dataset(
    ctx: Context, name: str, confirm: Callable[[DatasetDetails], bool]
) -> DatasetDetails | None:
    """Delete dataset ``name`` and its rows once ``confirm`` (shown what goes) agrees; return what was
    deleted, or None when ``confirm`` said no. Its shard files go with the next ``synthdb gc``."""
    details = show_dataset(ctx, name)
    _check_not_in_use(ctx, details, "delete")
    if not confirm(details):
        return None
    _check_not_in_use(ctx, show_dataset(ctx, name), "delete")  # a run may have started during the question
    datasets.delete(ctx.catalog, details.dataset.id)
    return details
