"""bob.bio.base ``CSVDatabase`` protocol folders from a catalog protocol, as bob 8 reads them.

Layout (``OUT/protocols`` is bob's ``dataset_protocols_path``)::

    OUT/protocols/<protocol>/train/for_background_model.csv   training (background model) samples
    OUT/protocols/<protocol>/train/for_znorm.csv, for_tnorm.csv  score-normalisation cohorts (bob reads
                                                                them from train/ only)
    OUT/protocols/<protocol>/dev/for_enrolling.csv, for_probing.csv  [dev/for_matching.csv]
    OUT/protocols/<protocol>/eval/...                           the same for a second scoring group

Columns ``path,subject_id,template_id,key``: bob groups samples into templates by ``template_id`` and uses
``key`` (the catalog key, unique in the dataset) to name its checkpoints, so a file used in two templates
(IJB-C) is no collision. Read with bob 8 (``original_directory``/``original_extension`` are not arguments
of ``CSVDatabase`` any more, they belong to its loader)::

    import bob.io.base
    from bob.bio.base.database import CSVDatabase, FileSampleLoader
    from sklearn.pipeline import make_pipeline

    database = CSVDatabase(
        name="mydataset", protocol="<protocol>", dataset_protocols_path="OUT/protocols",
        transformer=make_pipeline(FileSampleLoader(
            data_loader=bob.io.base.load,
            dataset_original_directory="<manifest: output.bob.original_directory>",
            extension="<manifest: output.bob.original_extension>")))

Groups: bob scores ``dev`` (its default) and ``eval`` and trains on ``train``. Catalog groups named
train/training/world/background become ``train``; a protocol with one scoring group exports it as ``dev``
(IJB-C's ``eval``, LFW View 1's ``test``); several are mapped by name (dev/validation, eval/test), and
``--group`` picks one of them (as ``dev``) where names do not say (LFW View 2's ten folds). The manifest
and a note say which catalog group became which.

Templates: a group whose comparisons the protocol lists is exported as bob's sparse scoring, a
``for_matching.csv`` of ``enroll_template_id,probe_template_id`` in the protocol's order (without it bob
scores every probe against every enrolment): image pairs (LFW) make each compared image its own template,
named by its key; template pairs (IJB-C) keep the protocol's template ids. Other groups enrol one
template per identity and probe one per sample, all against all. A dataset without protocols has the
built-in ``--protocol identities``: each identity enrols its reference sample (else its first) in
``dev`` and probes the others.

Without ``--crop``/``--size`` the CSVs point at the dataset's own files (``original_directory`` = the
dataset root); otherwise the crops are written under ``OUT/data`` as in the imagefolder format, and the
CSVs point there. bob appends ``original_extension`` to ``path``: when every file has the same extension
the paths leave it out, as bob's own protocols do; else they keep it and the extension is empty.
Samples are streamed in export order, their protocol roles looked up a chunk at a time.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from synthdb.catalog import protocols
from synthdb.catalog.schema import SampleRole
from synthdb.errors import SynthdbError
from synthdb.export.folder import safe_name
from synthdb.export.imagefolder import TreeNames, write_tree
from synthdb.export.job import FormatSpec, Job
from synthdb.export.selection import SampleRecord

IDENTITIES = "identities"
"""The built-in protocol of a dataset without one: each identity enrols one sample, probes the others."""
PURPOSE_FILES = {
    "train": "for_background_model.csv",
    "enroll": "for_enrolling.csv",
    "probe": "for_probing.csv",
    "znorm": "for_znorm.csv",
    "tnorm": "for_tnorm.csv",
}
TRAIN_NAMES = {"train", "training", "world", "background"}
BOB_NAMES = {"dev": {"dev", "development", "validation", "val"}, "eval": {"eval", "evaluation", "test"}}
CHUNK = 5_000
COLUMNS = ["path", "subject_id", "template_id", "key"]

Role = tuple[str, str]
"""(CSV file under the protocol folder, template id)."""


@dataclass
class Plan:
    """What the export writes: the protocol, catalog group -> bob group, and how each group compares."""

    protocol: str
    protocol_id: int | None
    groups: dict[str, str]
    paired: dict[str, str] = field(default_factory=dict)  # group -> "samples" | "templates"


def protocol_id(job: Job, name: str | None, builtin: bool = False) -> int | None:
    """The id of the dataset's protocol ``name`` (None for the built-in one when ``builtin``); the error
    lists the protocols there are, or says how to get one."""
    dataset = job.selection.dataset
    known = protocols.protocols_of(job.ctx.catalog, dataset.id)
    if name in known:
        return known[name]
    if builtin and name == IDENTITIES:
        return None
    extra = f", or the built-in {IDENTITIES}" if builtin else ""
    if not known:
        how = f"pass --protocol {IDENTITIES} (each identity enrols one sample, probes the others), or "
        raise SynthdbError(
            f"dataset '{dataset.name}' has no protocol: {how if builtin else ''}import the dataset with its "
            "protocol files "
            "(synthdb import lfw|multipie|ijbc|ffhq)"
        )
    what = "needs --protocol" if name is None else f"has no protocol '{name}'"
    raise SynthdbError(
        f"dataset '{dataset.name}' {what} (its protocols: {', '.join(known)}{extra}): pass one of those"
    )


def plan(job: Job) -> Plan:
    """Resolve the protocol and map its groups onto bob's (see the module doc)."""
    name = job.options.protocol
    pid = protocol_id(job, name, builtin=True)
    assert name is not None
    if pid is None:
        return Plan(name, None, {"dev": "dev"})
    names = protocols.group_names(job.ctx.catalog, pid)
    with_pairs = set(protocols.groups_with_pairs(job.ctx.catalog, pid))
    train = [g for g in names if g.lower() in TRAIN_NAMES]
    scoring = [g for g in names if g not in train]
    chosen = job.options.group
    if chosen is not None:
        if chosen not in scoring:
            raise SynthdbError(
                f"protocol '{name}' has no scoring group '{chosen}' (its groups: {', '.join(names)}): "
                "pass one of the others to --group"
            )
        scoring = [chosen]
    mapping = _scoring_groups(name, scoring)
    job.notes += [f"group '{g}' exported as bob's '{b}'" for g, b in mapping.items() if g != b]
    mapping.update({g: "train" for g in train})
    result = Plan(name, pid, mapping)
    for group in set(mapping) & with_pairs:
        if mapping[group] != "train":
            first = next(protocols.iter_pairs(job.ctx.catalog, pid, group))
            result.paired[group] = "samples" if first.first_sample_id is not None else "templates"
    return result


def _scoring_groups(protocol: str, scoring: list[str]) -> dict[str, str]:
    """catalog group -> bob's dev or eval: one group is dev; several must say which is which."""
    if len(scoring) == 1:
        return {scoring[0]: "dev"}
    mapping = {g: b for g in scoring for b, aliases in BOB_NAMES.items() if g.lower() in aliases}
    if len(mapping) != len(scoring) or len(set(mapping.values())) != len(mapping):
        raise SynthdbError(
            f"protocol '{protocol}' has groups {', '.join(scoring)}: bob scores dev and eval only; "
            "pick one with --group (it is exported as dev)"
        )
    return mapping


# ------------------------------------------------------------------------------------------------- roles


def _roles_of_chunk(job: Job, p: Plan, chunk: list[SampleRecord]) -> dict[int, set[Role]]:
    """sample id -> the CSV rows it gets, for one chunk of samples of a catalog protocol."""
    assert p.protocol_id is not None
    roles: dict[int, set[Role]] = {}
    by_id = {s.id: s for s in chunk}
    for group, purpose, sample_id in protocols.memberships_of(job.ctx.catalog, p.protocol_id, by_id):
        if group not in p.groups or p.paired.get(group) == "samples":
            continue
        role = _member_role(p, group, purpose, by_id[sample_id])
        if role is not None:
            roles.setdefault(sample_id, set()).add(role)
    for side in protocols.pair_sides(job.ctx.catalog, p.protocol_id, by_id):
        if p.paired.get(side.group) == "samples":
            purpose = "enroll" if side.first else "probe"
            role = (f"{p.groups[side.group]}/{PURPOSE_FILES[purpose]}", by_id[side.sample_id].key)
            roles.setdefault(side.sample_id, set()).add(role)
    return roles


def _member_role(p: Plan, group: str, purpose: str | None, sample: SampleRecord) -> Role | None:
    """The CSV row of one membership: training and cohorts go under train/, bob's only place for them."""
    bob = p.groups[group]
    purpose = purpose or ("train" if bob == "train" else None)
    if purpose not in PURPOSE_FILES:
        raise SynthdbError(
            f"protocol '{p.protocol}' group '{group}' has members with purpose {purpose!r}: "
            f"bob needs one of {', '.join(PURPOSE_FILES)}; fix the protocol's import"
        )
    folder = "train" if purpose in ("train", "znorm", "tnorm") else bob
    if bob == "train" and purpose in ("enroll", "probe"):
        return None  # a training group's enrol/probe lists mean nothing to bob
    if p.paired.get(group) == "templates":
        template = str((sample.attributes or {}).get("template_id", sample.label))
    else:
        template = str(sample.identity) if purpose in ("enroll", "tnorm") else sample.key
    return f"{folder}/{PURPOSE_FILES[purpose]}", template


def _builtin_roles(group: list[SampleRecord]) -> Iterator[tuple[SampleRecord, set[Role]]]:
    """The ``identities`` protocol for one identity: its reference (else first) sample enrols."""
    enrolled = next((s for s in group if s.role == SampleRole.REFERENCE), group[0])
    for s in group:
        if s is enrolled:
            yield s, {(f"dev/{PURPOSE_FILES['enroll']}", str(s.identity))}
        else:
            yield s, {(f"dev/{PURPOSE_FILES['probe']}", s.key)}


def with_roles(job: Job, p: Plan) -> Iterator[tuple[SampleRecord, set[Role]]]:
    """The selected samples that get CSV rows, in export order, with their rows."""
    samples = job.selection.samples()
    if p.protocol_id is None:
        for _, group in itertools.groupby(samples, key=lambda s: s.cls):
            yield from _builtin_roles(list(group))
        return
    while chunk := list(itertools.islice(samples, CHUNK)):
        roles = _roles_of_chunk(job, p, chunk)
        yield from ((s, roles[s.id]) for s in chunk if s.id in roles)


# ------------------------------------------------------------------------------------------------ writing


class _CsvFiles:
    """The protocol's CSV files, written under temporary names and renamed when complete, removed when
    not."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._open: dict[str, tuple[TextIO, Any]] = {}
        self.rows = 0

    def row(self, name: str, values: list[Any], header: list[str] = COLUMNS) -> None:
        if name not in self._open:
            path = self.folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path.with_name(f".{path.name}.tmp"), "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._open[name] = (fh, csv.writer(fh, lineterminator="\n"))
            self._open[name][1].writerow(header)
        self._open[name][1].writerow(values)
        self.rows += 1

    def close(self, complete: bool) -> list[str]:
        for name, (fh, _) in self._open.items():
            fh.close()
            tmp = (self.folder / name).with_name(f".{Path(name).name}.tmp")
            if complete:
                os.replace(tmp, self.folder / name)
            else:  # a failed export leaves no half-written list behind (the next run writes them anew)
                tmp.unlink(missing_ok=True)
        return sorted(self._open)


def _extension(job: Job, exported: bool) -> str:
    """The extension every image path shares (bob appends it), else ''."""
    if exported:
        return ".png"
    suffixes = {PurePosixPath(s.path or "").suffix for s in job.selection.samples()}
    return suffixes.pop() if len(suffixes) == 1 else ""


def write(job: Job) -> dict[str, Any]:
    p = plan(job)
    exported = job.options.crop is not None or job.options.size is not None
    images = 0
    if exported:
        used = (s for s, _ in with_roles(job, p))
        images = write_tree(job, used, job.selection.count, job.out / "data", None)
    extension = _extension(job, exported)
    root = job.out if exported else job.selection.dataset.root
    files = _CsvFiles(job.out / "protocols" / safe_name(p.protocol))
    present: set[Role] = set()
    keys: dict[int, str] = {}  # samples compared in image pairs: their template is their key
    complete = False
    try:
        names = TreeNames()
        for sample, roles in with_roles(job, p):
            path = _row_path(job, sample, names, exported)
            if path is None:
                continue  # its image could not be written (skipped, and counted)
            path = path[: -len(extension)] if extension else path
            for name, template in sorted(roles):
                files.row(name, [path, sample.identity, template, sample.key])
                present.add((name, template))
            if "samples" in p.paired.values():
                keys[sample.id] = sample.key
        dropped = _matching(job, p, files, present, keys)
        complete = True
    finally:
        written = files.close(complete)
    if not written:
        raise SynthdbError(
            f"protocol '{p.protocol}' has no member among the selected samples: "
            "check --where and that the protocol was imported"
        )
    return {
        "rows": files.rows,
        "images": images,
        "csv_files": len(written),
        "pairs_dropped": dropped,
        "bob": {
            "dataset_protocols_path": str(job.out / "protocols"),
            "protocol": safe_name(p.protocol),
            "groups": p.groups,
            "original_directory": str(root),
            "original_extension": extension,
        },
    }


def _row_path(job: Job, sample: SampleRecord, names: TreeNames, exported: bool) -> str | None:
    """The path a CSV row names: the dataset's file, or the exported crop (None when it was skipped)."""
    if not exported:
        return str(sample.path)
    assert job.images is not None
    path = f"data/{names(sample)}{job.images.extension(sample.path or '')}"
    return path if (job.out / path).is_file() else None


def _matching(job: Job, p: Plan, files: _CsvFiles, present: set[Role], keys: dict[int, str]) -> int:
    """Write ``<group>/for_matching.csv`` of each compared group; return the pairs left out because one
    side has no row (not selected, or its image could not be written)."""
    dropped = 0
    for group, kind in sorted(p.paired.items()):
        assert p.protocol_id is not None
        bob = p.groups[group]
        enrolled, probed = f"{bob}/{PURPOSE_FILES['enroll']}", f"{bob}/{PURPOSE_FILES['probe']}"
        header = ["enroll_template_id", "probe_template_id"]
        for pair in protocols.iter_pairs(job.ctx.catalog, p.protocol_id, group):
            if kind == "templates":
                first, second = str(pair.first_template), str(pair.second_template)
            else:
                first, second = keys.get(pair.first_sample_id, ""), keys.get(pair.second_sample_id, "")
            if (enrolled, first) in present and (probed, second) in present:
                files.row(f"{bob}/for_matching.csv", [first, second], header)
            else:
                dropped += 1
    return dropped


FORMAT = FormatSpec("bob", write, needs_identity=True, needs_image=True, encoding="keep")
