"""Everything the catalog and the store know about one sample (``synthdb show SAMPLE``).

A sample is named by its id or its key (with the dataset when the key is in several). The answer gathers
what is otherwise spread over tables and shards: the row (dataset, identity, role, label, attributes), its
image file (where it is, whether it is there and readable, its size from the header, without decoding it),
its sample issues, its vectors in every committed shard (embedding norms, which flag degenerate faces; latent
norms and sizes), how each embedding was cropped (the embed run's detector into the embedder's crop
preset), and the run that made it (kind, algorithm, root seed: with the sample's key, what reproduces a
generated latent). ``crop_out`` also writes the aligned crop each embedding was computed from, re-detected
the same way, as a PNG.

Only the sample's own files are read: the image resolves inside its dataset's root (a symlink elsewhere is
reported, not followed), and vectors come from the dataset's committed shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthdb.catalog import issues, shards
from synthdb.catalog.datasets import dataset_id as lookup_dataset_id
from synthdb.catalog.datasets import get_dataset
from synthdb.catalog.runs import get_run
from synthdb.catalog.samples import SampleDetail, ids_of_key, sample_detail
from synthdb.catalog.schema import ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store import parquet
from synthdb.untrusted import Refused, image_header, resolve_inside

ID_COLUMNS = ("sample_id", "identity_id")


@dataclass(frozen=True)
class Vector:
    """One committed vector of the sample: its shard's content and space (model or generator), column,
    size, L2 norm, and the run that wrote it (for embeddings: the embed run, with its ``detector``)."""

    content: str
    space: str
    column: str
    dims: int
    norm: float
    shard_id: int
    run_id: int | None
    detector: str | None = None


@dataclass
class SampleView:
    """What ``synthdb show`` prints about one sample (see the module docstring)."""

    sample: SampleDetail
    image: Path | None
    image_state: str
    image_size: tuple[int, int] | None
    issues: list[issues.Issue]
    vectors: list[Vector]
    made_by: dict[str, Any] | None
    crops: list[Path] = field(default_factory=list)


def find_sample(ctx: Context, sample: str, dataset: str | None = None) -> SampleDetail:
    """The sample called ``sample``: an id, else a key (of ``dataset`` when given)."""
    within = None if dataset is None else lookup_dataset_id(ctx.catalog, dataset)
    ids = ids_of_key(ctx.catalog, sample, within)
    if not ids and sample.isascii() and sample.isdigit() and int(sample) < 2**63:  # an id a row can have
        ids = [int(sample)]
    if len(ids) > 1:
        raise SynthdbError(
            f"key '{sample}' names {len(ids)} samples of different datasets: add --dataset NAME"
        )
    found = sample_detail(ctx.catalog, ids[0]) if ids else None
    if found is None or (within is not None and found.dataset_id != within):
        where = f" in dataset '{dataset}'" if dataset else ""
        raise SynthdbError(f"no sample '{sample}'{where}: pass a sample id or key (synthdb query shows them)")
    return found


def show_sample(
    ctx: Context, sample: str, dataset: str | None = None, crop_out: str | None = None
) -> SampleView:
    """Gather :class:`SampleView` for ``sample`` (an id or a key); ``crop_out``: write its aligned crops."""
    row = find_sample(ctx, sample, dataset)
    image, state, size = _image(ctx, row)
    vectors = _vectors(ctx, row)
    made_by = None
    if row.run_id is not None:
        run = get_run(ctx.catalog, row.run_id)
        made_by = {"run": run.id, "kind": run.kind, "algorithm": run.algorithm, "seed": run.seed}
    view = SampleView(row, image, state, size, issues.of_sample(ctx.catalog, row.id), vectors, made_by)
    if crop_out is not None:
        view.crops = _write_crops(ctx, view, Path(crop_out))
    return view


def _image(ctx: Context, row: SampleDetail) -> tuple[Path | None, str, tuple[int, int] | None]:
    """(path, state, (width, height)) of the sample's image file, read only as far as its header."""
    root = get_dataset(ctx.catalog, row.dataset).root
    if row.path is None or root is None:
        return None, "no image recorded", None
    base = Path(root).resolve()
    try:
        path = resolve_inside(base, row.path)
    except Refused as refused:
        return base / row.path, str(refused), None
    if not path.exists():
        return path, "missing", None
    try:
        return path, "readable", image_header(path).size
    except Refused as refused:
        return path, str(refused), None


def _vectors(ctx: Context, row: SampleDetail) -> list[Vector]:
    """The sample's vector in every committed latent and embedding shard of its dataset that holds it."""
    found: list[Vector] = []
    contents = [ShardContent.LATENT, ShardContent.EMBEDDING]
    for shard in shards.committed(ctx.catalog, dataset_id=row.dataset_id, contents=contents):
        path = ctx.store.abspath(shard.path)
        ids = parquet.read_table(path, ["sample_id"]).column("sample_id").to_numpy()
        at = np.flatnonzero(ids == row.id)
        if not len(at):
            continue
        table = parquet.read_table(path).slice(int(at[0]), 1)
        detector = _detector(ctx, shard.run_id) if shard.content == ShardContent.EMBEDDING else None
        for name in table.column_names:
            if name in ID_COLUMNS:
                continue
            values = np.asarray(table.column(name)[0].as_py(), np.float64)
            norm = float(np.linalg.norm(values))
            found.append(
                Vector(
                    shard.content,
                    shard.space or "",
                    name,
                    len(values),
                    norm,
                    shard.id,
                    shard.run_id,
                    detector,
                )
            )
    return found


def _detector(ctx: Context, run_id: int | None) -> str | None:
    """The detector of the embed run that wrote an embedding shard (None when no run says)."""
    if run_id is None:
        return None
    detector = get_run(ctx.catalog, run_id).params.get("detector")
    return detector if isinstance(detector, str) else None


def _write_crops(ctx: Context, view: SampleView, out: Path) -> list[Path]:
    """Re-crop the image as each embedding saw it: from its detector (or the dataset's fixed geometry)
    into the embedder card's crop preset; one PNG per embedder, named after it."""
    from synthdb.crop_files import crop_images
    from synthdb.nets.cards import get_card

    if view.image is None or view.image_state != "readable":
        raise SynthdbError(
            f"sample {view.sample.key} has no readable image ({view.image_state}): no crop to write"
        )
    recorded = (get_dataset(ctx.catalog, view.sample.dataset).attributes or {}).get("preset")
    written = []
    for vector in (v for v in view.vectors if v.content == ShardContent.EMBEDDING):
        source = vector.detector if vector.detector not in (None, "none") else recorded
        if not isinstance(source, str):
            continue
        report = crop_images([view.image], source, get_card(vector.space).preset, out / vector.space)
        result = report.results[0]
        if not result.ok:
            raise SynthdbError(f"cannot crop {view.image} as {vector.space} saw it: {result.error}")
        written.append(Path(str(result.output)))
    if not written:
        raise SynthdbError(
            f"no embedding of sample {view.sample.key} says how its image was cropped: nothing to write "
            "(embed it with `synthdb embed`, or see its issues)"
        )
    return written
