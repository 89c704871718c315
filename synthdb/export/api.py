"""``export()``: the Python twin of ``synthdb export DATASET --format F OUT``.

It checks every option before anything is written, selects the samples, claims the output folder
(resuming the same export left there by a crash), records one ``export`` run, lets the format write,
then writes the manifest and marks the folder complete. Re-running a complete export changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from synthdb import defaults
from synthdb.catalog.runs import finish_run, recorded_run, set_summary, still_running
from synthdb.catalog.schema import DatasetKind, RunKind, RunStatus
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.export import bob, imagefolder, pairs_bin, recordio, synthetics_h5, webdataset
from synthdb.export.folder import MANIFEST_NAME, SPILL_NAME, ExportState
from synthdb.export.image_source import ImageSource
from synthdb.export.job import ExportOptions, FormatSpec, Job, write_manifest
from synthdb.export.selection import DatasetInfo, Selection, load_dataset, matching_ids, select
from synthdb.faces.align import PRESETS
from synthdb.progress import progress_bar

FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        imagefolder.FORMAT,
        recordio.FORMAT,
        webdataset.FORMAT,
        bob.FORMAT,
        pairs_bin.FORMAT,
        synthetics_h5.FORMAT,
    )
}
STREAMING = {"imagefolder", "recordio", "webdataset", "synthetics-h5"}
"""Formats whose progress counts the selected samples (the others count what they need of them)."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: its manifest (counts, files with sha256, runs), and a note if nothing ran."""

    dataset: str
    format: str
    out: Path
    run_id: int | None
    manifest: dict[str, Any]
    note: str | None = None


def _check(spec: FormatSpec, options: ExportOptions) -> None:
    """Refuse options that are invalid or mean nothing for the format, before any run or file exists."""
    if options.size is not None and not 8 <= options.size <= 4096:
        raise SynthdbError(f"--size {options.size} is out of range: pass a side length from 8 to 4096 pixels")
    if not 1 <= options.quality <= 100:
        raise SynthdbError(f"--quality {options.quality} is out of range: pass 1 to 100 (JPEG quality)")
    if options.shard_max_count < 1 or options.shard_max_bytes < 1:
        raise SynthdbError("--shard-max-count and --shard-max-size must be positive")
    if options.checkpoint_every < 1:
        raise SynthdbError("checkpoint_every must be positive: it counts samples between checkpoints")
    if spec.encoding is None and (options.crop or options.size):
        raise SynthdbError(f"format {spec.name} holds no images: drop --crop and --size")
    if options.crop is not None and options.crop not in PRESETS:
        raise SynthdbError(f"unknown crop preset '{options.crop}': choose one of {', '.join(PRESETS)}")
    if spec.name == "pairs-bin":
        if options.protocol is not None and options.pairs is not None:
            raise SynthdbError("--pairs samples pairs, --protocol takes a protocol's pairs: pass only one")
        if options.pairs is not None and options.pairs < 2:
            raise SynthdbError(f"--pairs {options.pairs}: pass at least 2 (one same, one different)")
    elif options.pairs is not None:
        raise SynthdbError(f"--pairs is for --format pairs-bin, not {spec.name}: drop it")
    if spec.name not in ("bob", "pairs-bin") and options.protocol:
        raise SynthdbError(f"--protocol is for bob and pairs-bin, not {spec.name}: select with --where")
    if spec.name not in ("bob", "pairs-bin") and options.group:
        raise SynthdbError("--group picks a protocol's group for bob and pairs-bin: drop it")
    if options.source is not None and options.crop is None:
        raise SynthdbError("--from says how to crop: pass --crop PRESET with it, or drop it")
    if spec.name != "synthetics-h5" and options.embedding_model:
        raise SynthdbError("--embeddings is for --format synthetics-h5: drop it")


def _resize_notes(spec: FormatSpec, options: ExportOptions, dataset: DatasetInfo) -> list[str]:
    """Refuse to squash photos into a record format's fixed size unasked; say what a resize does.

    insightface's readers expect aligned 112x112 faces: resizing a whole photo gives neither, and a
    non-square one comes out stretched, so photos need ``--crop`` or an explicit ``--size``.
    """
    if spec.encoding is None or options.crop is not None:
        return []
    photos = dataset.kind == DatasetKind.GENUINE
    if options.size is None and spec.default_size is not None:
        size = spec.default_size
        if photos:
            raise SynthdbError(
                f"--format {spec.name} writes {size}x{size} images and '{dataset.name}' holds photos: pass "
                f"--crop arcface to align each face as insightface expects, or --size {size} to resize "
                "the photos as they are"
            )
        return [
            f"images resized to {size}x{size} from the generator's framing, not aligned: pass --crop arcface "
            "(with --from PRESET) to align them as insightface expects"
        ]
    if options.size is not None and photos:
        return [f"photos resized to {options.size}x{options.size} as they are, not aligned (a non-square one "
                "is stretched): pass --crop to align the faces"]  # fmt: skip
    return []


def _source_preset(dataset: DatasetInfo, options: ExportOptions) -> str | None:
    """The geometry the dataset's images are in, needed to crop them: --from, the dataset's, or a detector."""
    if options.crop is None:
        return None
    if options.source is not None:
        return options.source
    recorded = dataset.attributes.get("preset")
    if isinstance(recorded, str) and recorded in PRESETS:
        return recorded
    if dataset.kind == DatasetKind.GENUINE:
        return defaults.DETECTOR
    raise SynthdbError(
        f"dataset '{dataset.name}' does not record its images' geometry: pass --from PRESET "
        "(the generator's crop, e.g. ffhq256)"
    )


def _close_interrupted(ctx: Context, earlier: list[int], run_id: int) -> None:
    """Mark earlier runs of this folder still ``running`` as interrupted.

    They are dead, not slow: this process holds the folder's lock, which a live export would hold. A
    SIGKILL or power cut gave them no chance to close their row.
    """
    stale = still_running(ctx.catalog, earlier)
    for stale_id in stale:
        finish_run(
            ctx.catalog, stale_id, RunStatus.INTERRUPTED, f"stopped before the end; run {run_id} resumed it"
        )


def export(
    ctx: Context,
    dataset: str,
    fmt: str,
    out: str | Path,
    *,
    where: str | None = None,
    crop: str | None = None,
    source: str | None = None,
    size: int | None = None,
    quality: int = 95,
    protocol: str | None = None,
    group: str | None = None,
    pairs: int | None = None,
    seed: int = 0,
    embedding_model: str | None = None,
    shard_max_count: int = 100_000,
    shard_max_bytes: int = 1_000_000_000,
    workers: int | None = None,
    checkpoint_every: int = 1_000,
    quiet: bool = False,
) -> ExportReport:
    """Export ``dataset`` (or the part ``where`` selects) as ``fmt`` into the folder ``out``.

    ``fmt`` is one of :data:`FORMATS`; the module of each format documents its layout. ``where`` is a SQL
    predicate over the sample ``s`` and its identity ``i``; ``crop`` an output alignment preset and
    ``source`` the images' geometry (default: the dataset's recorded preset, else the MTCNN detector for
    genuine photos); ``size`` the output side in pixels. A folder left by an interrupted export of the
    same selection and parameters is resumed; the result equals an uninterrupted export byte for byte.
    """
    if fmt not in FORMATS:
        raise SynthdbError(f"unknown export format '{fmt}': choose one of {', '.join(FORMATS)}")
    spec = FORMATS[fmt]
    options = ExportOptions(
        where=where,
        crop=crop,
        source=source,
        size=size,
        quality=quality,
        protocol=protocol,
        group=group,
        pairs=pairs,
        seed=seed,
        embedding_model=embedding_model,
        shard_max_count=shard_max_count,
        shard_max_bytes=shard_max_bytes,
        workers=workers,
        checkpoint_every=checkpoint_every,
        quiet=quiet,
    )
    _check(spec, options)
    info = load_dataset(ctx, dataset)
    notes = _resize_notes(spec, options, info)
    options = replace(options, size=size or spec.default_size, source=_source_preset(info, options))
    images = None
    if spec.encoding is not None:
        if info.root is None:
            raise SynthdbError(
                f"dataset '{info.name}' has no root folder recorded: its images cannot be "
                "exported (re-import it, or export synthetics-h5)"
            )
        images = ImageSource(
            info.root,
            encoding=spec.encoding,
            crop=options.crop,
            source=options.source,
            size=options.size,
            quality=options.quality,
        )
    keep = matching_ids(ctx, info.id, options.where) if options.where else None  # before any folder exists
    out = Path(out).expanduser().resolve()
    params = {"dataset": info.name, "format": spec.name, **options.params()}
    state = ExportState.open(out, params)
    selection: Selection | None = None
    try:
        selection = select(ctx, info, keep, spec.needs_identity, spec.needs_image, out / SPILL_NAME)
        _check_selection(selection)
        state.check_selection(selection.fingerprint)
        if state.complete:
            selection.close()  # its spill folder would be one more (empty) class to a folder reader
            manifest = json.loads((out / MANIFEST_NAME).read_text())
            note = f"{out} holds this export already, complete: nothing to do"
            return ExportReport(info.name, spec.name, out, None, manifest, note=note)
        state.save()
        run_id, manifest = _run(ctx, spec, selection, out, options, state, images, notes)
    except BaseException:
        if selection is not None:
            selection.close()
        state.discard()  # only a folder this call created and wrote nothing of its own into
        raise
    finally:
        state.close()
    return ExportReport(info.name, spec.name, out, run_id, manifest)


def _check_selection(selection: Selection) -> None:
    if not selection.count:
        excluded = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in selection.excluded.items())
        raise SynthdbError(
            f"no sample of '{selection.dataset.name}' to export{f' ({excluded})' if excluded else ''}: "
            "check --where and the format's needs (identity, image)"
        )


def _run(
    ctx: Context,
    spec: FormatSpec,
    selection: Selection,
    out: Path,
    options: ExportOptions,
    state: ExportState,
    images: ImageSource | None,
    notes: list[str],
) -> tuple[int, dict[str, Any]]:
    """Record one export run around the format's writer and the manifest; return the run and manifest."""
    params = state.data["params"]
    seed_used = options.seed if spec.name == "pairs-bin" and options.protocol is None else None
    with recorded_run(
        ctx.catalog, RunKind.EXPORT, algorithm=spec.name, params={**params, "out": str(out)}, seed=seed_used
    ) as run_id:
        _close_interrupted(ctx, state.data["runs"], run_id)
        state.data["runs"].append(run_id)
        state.save()
        total = selection.count if spec.name in STREAMING else None
        title = f"exporting {selection.dataset.name} as {spec.name}"
        with progress_bar(total, title, options.quiet) as advance:
            job = Job(ctx, run_id, spec, selection, out, options, state, images, advance, notes=notes)
            output = spec.write(job)
        selection.close()
        manifest = write_manifest(job, output)
        state.data["complete"] = True
        state.save()
        summary = {key: manifest[key] for key in ("counts", "output", "notes")}
        summary.update(out=str(out), skipped=manifest["skipped"][:20])
        set_summary(ctx.catalog, run_id, summary)
    return run_id, manifest
