"""HDF5 sample files in the layout of the reference ``synthetics`` package (format 2.0).

Why this module exists: the reference package stores each generated sample (latents, camera label,
face-recognition embedding, 3DMM coefficients) in HDF5, either one sample per file or many samples in a
``samples.h5`` collection. synthdb reads and writes exactly that layout so that files can be exchanged
with the reference package in both directions. It is an exchange format, not synthdb's own storage:

* the collection keeps one HDF5 group per sample. Each group costs object headers and B-tree/heap
  metadata (about 2 KB, as much as a w_latent plus an embedding), and every read is a walk through small
  scattered objects, so at around 1e6 samples listing or reading the file is slow. Importers should
  stream it once (:meth:`SampleCollection.iter_samples`) or read one field for all samples
  (:meth:`SampleCollection.read_arrays`) and move the data into columnar shards.
* HDF5 does not give back the space of deleted groups, so ``add(..., replace=True)`` leaves the old bytes
  in the file until it is repacked (``h5repack``).

Layout (every dataset carries a leading batch dimension of 1 on disk; in memory it is dropped)::

    /                     attrs magic="synthetics", major=2, minor=0, [network_type], [embedding_type]
    z_latent (1, 512)     w_latent (1, 512)     w_plus_latent (1, num_ws, 512)
    c_label (1, 25)       embedding (1, D)
    bfm_model/            id (1, 80), exp (1, 64), tex (1, 80), angle (1, 3), gamma (1, 27), trans (1, 3)

A collection file has root attrs magic="synthetics_collection", major=2, minor=0, one group per identity
named ``f"{identity:05d}"`` and, inside it, one group per label holding the layout above without the
magic/major/minor attributes.

Fixes over the reference: re-adding a label raises unless ``replace=True`` (which really replaces it on
disk), int labels work, ``bfm_model`` is read relative to its group (the reference reads absolute
``/bfm_model/...`` paths, which is wrong inside a collection), identities sort numerically, labels sort
naturally (``augmentation_2`` before ``augmentation_10``), and reading never loads the whole file.

Every error a user can act on (not HDF5, truncated, wrong magic, unsupported version, wrong shape,
missing attribute) is a one-line :class:`~synthdb.errors.SynthdbError` that names the file and the fix.

Files come from other people, so reading checks the layout from metadata before a byte of data is read
(:func:`_member`, :func:`_checked_dataset`): only hard links are followed (an external link opens
another file, a soft link can alias anything); a dataset must have its field's dtype and shape, within
``MAX_NUM_WS`` and ``MAX_EMBEDDING_DIM`` (a 12 KB file can declare a 4 GB dataset); its data must lie
in this file (no external raw storage, no virtual dataset mapping other files); and it may use only the
gzip, shuffle and fletcher32 filters, with no chunk stored larger than its raw size (HDF5's gzip filter
inflates a chunk whatever its declared size: a 200 KB chunk can claim 200 MB). A dataset read is then at
most 64 KiB, and the worst a compressed one can inflate to in HDF5's buffer is gzip's 1032:1 of that.
Attributes must be scalars. Groups are only entered at the layout's fixed depth, so nesting and cycles
(hard links to an ancestor) cost nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from h5py import h5d, h5l, h5z

from synthdb.errors import SynthdbError
from synthdb.files import write_atomically

SAMPLE_MAGIC = "synthetics"
COLLECTION_MAGIC = "synthetics_collection"
FORMAT_MAJOR = 2
FORMAT_MINOR = 0

LATENT_DIM = 512
C_LABEL_DIM = 25
BFM_DIMS: Mapping[str, int] = {"id": 80, "exp": 64, "tex": 80, "angle": 3, "gamma": 27, "trans": 3}
MAX_NUM_WS = 32
"""The most W+ layers a sample may have (StyleGAN2 at 1024 px has 18, StyleGAN3 16, EG3D 14)."""
MAX_EMBEDDING_DIM = 4096
"""The longest embedding a sample may have (face recognition models give 128 to 512)."""
FILTERS = {h5z.FILTER_DEFLATE: "gzip", h5z.FILTER_SHUFFLE: "shuffle", h5z.FILTER_FLETCHER32: "fletcher32"}
"""The HDF5 filters a dataset may use; others (szip, lzf, plugins) are refused before they run."""
CHUNK_SLACK = 64
"""Bytes a stored chunk may exceed its raw size by (gzip's header and worst-case expansion of a tiny
chunk, fletcher32's checksum); more means it inflates past its shape."""
MAX_TEXT_ATTRIBUTE = 256
"""The longest network_type or embedding_type string read."""

LATENT_FIELDS = ("z_latent", "w_latent", "w_plus_latent", "c_label")
"""Fields that only make sense with a generator, hence require ``network_type``."""
ARRAY_FIELDS = (*LATENT_FIELDS, "embedding")
BFM_FIELDS = tuple(f"bfm_model/{key}" for key in BFM_DIMS)
_EMPTY_ROWS: Mapping[str, tuple[int, ...]] = {
    "z_latent": (LATENT_DIM,),
    "w_latent": (LATENT_DIM,),
    "w_plus_latent": (0, LATENT_DIM),
    "c_label": (C_LABEL_DIM,),
    "embedding": (0,),
    **{f"bfm_model/{k}": (d,) for k, d in BFM_DIMS.items()},
}
"""Row shape of an empty read_arrays() result, where the file gives no example row."""

PathLike = str | os.PathLike[str]


def _describe_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _shape_problem(name: str, shape: tuple[int, ...]) -> str | None:
    """Return why an in-memory (batchless) shape is wrong for ``name``, or None if it is right."""
    fixed = {"z_latent": (LATENT_DIM,), "w_latent": (LATENT_DIM,), "c_label": (C_LABEL_DIM,)}
    if name in fixed:
        expected = _describe_shape(fixed[name])
        ok = shape == fixed[name]
    elif name == "w_plus_latent":
        expected = f"(num_ws, {LATENT_DIM}) with 1 <= num_ws <= {MAX_NUM_WS}"
        ok = len(shape) == 2 and 1 <= shape[0] <= MAX_NUM_WS and shape[1] == LATENT_DIM
    elif name == "embedding":
        expected = f"(D,) with 1 <= D <= {MAX_EMBEDDING_DIM}"
        ok = len(shape) == 1 and 1 <= shape[0] <= MAX_EMBEDDING_DIM
    else:  # bfm_model/<key>
        expected = _describe_shape((BFM_DIMS[name.split("/", 1)[1]],))
        ok = shape == (BFM_DIMS[name.split("/", 1)[1]],)
    if ok:
        return None
    return f"{name} has shape {_describe_shape(shape)}, expected {expected}"


def _as_float32(name: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise SynthdbError(
            f"Sample.{name} is not a numeric array ({exc}); pass a float numpy array"
        ) from None


@dataclass(eq=False)
class H5Sample:
    """One generated (or projected) face sample, the reference package's ``Sample``, as stored in its HDF5
    files (not a catalog :class:`synthdb.catalog.schema.Sample` row); arrays are float32 and have no batch
    dimension.

    Every field is optional, as in the reference format. ``network_type`` (e.g. ``"stylegan2-256"``)
    says which generator the latents belong to, so it is required with any latent or ``c_label``;
    ``embedding_type`` (e.g. ``"iresnet50"``) is required with ``embedding``, whose length D depends on
    the model (128 for dlib, 512 for iresnet) and is stored as given. EG3D samples need ``c_label``
    because the generator cannot render without a camera.
    """

    z_latent: np.ndarray | None = None
    w_latent: np.ndarray | None = None
    w_plus_latent: np.ndarray | None = None
    c_label: np.ndarray | None = None
    embedding: np.ndarray | None = None
    bfm_model: dict[str, np.ndarray] | None = None
    network_type: str | None = None
    embedding_type: str | None = None

    def __post_init__(self) -> None:
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _as_float32(name, value))
        if self.bfm_model is not None:
            self.bfm_model = {k: _as_float32(f"bfm_model/{k}", v) for k, v in dict(self.bfm_model).items()}
        self.validate()

    def validate(self) -> None:
        """Raise SynthdbError if a shape or a required type string is wrong.

        Runs on construction and again before every write, because dataclass fields can be reassigned.
        """
        for name in ARRAY_FIELDS:
            value = getattr(self, name)
            if value is not None and (problem := _shape_problem(name, np.shape(value))):
                hint = "; drop the leading batch dimension" if np.shape(value)[:1] == (1,) else ""
                raise SynthdbError(f"Sample.{problem}{hint}")
        if self.bfm_model is not None:
            keys = set(self.bfm_model)
            if keys != set(BFM_DIMS):
                raise SynthdbError(
                    f"Sample.bfm_model has keys {sorted(keys)}, expected exactly {list(BFM_DIMS)}; "
                    "pass all six Deep3DFaceRecon coefficient groups"
                )
            for key, value in self.bfm_model.items():
                if problem := _shape_problem(f"bfm_model/{key}", np.shape(value)):
                    raise SynthdbError(f"Sample.{problem}")
        for name in ("network_type", "embedding_type"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise SynthdbError(f"Sample.{name} must be a non-empty string, got {value!r}")
        present = [name for name in LATENT_FIELDS if getattr(self, name) is not None]
        if present and self.network_type is None:
            raise SynthdbError(
                f"missing network_type for a sample with {', '.join(present)}; "
                "set network_type to the generator name (e.g. 'stylegan2-256')"
            )
        if self.embedding is not None and self.embedding_type is None:
            raise SynthdbError(
                "missing embedding_type for a sample with an embedding; "
                "set embedding_type to the model name (e.g. 'iresnet50')"
            )
        eg3d = self.network_type is not None and self.network_type.lower().startswith("eg3d")
        if eg3d and self.c_label is None:
            raise SynthdbError(
                f"network_type {self.network_type!r} needs a c_label (the EG3D camera); add a (25,) c_label"
            )


# ----------------------------------------------------------------------------------------------- helpers


def natural_sort_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``augmentation_2`` before ``augmentation_10``."""
    parts = re.split(r"(\d+)", text)
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), text)


def normalize_label(label: str | int) -> str:
    """The group name the reference uses for a label: ``str(label)`` with ``/`` and spaces made ``_``."""
    if isinstance(label, bool) or not isinstance(label, (str, int, np.integer)):
        raise SynthdbError(f"label must be a str or an int, got {type(label).__name__} {label!r}")
    name = str(label).replace("/", "_").replace(" ", "_")
    if name in ("", ".", ".."):
        raise SynthdbError(
            f"label {label!r} is not a usable group name (empty, '.' or '..'); use another label"
        )
    return name


def _check_identity(identity: int) -> int:
    if isinstance(identity, bool) or not isinstance(identity, (int, np.integer)) or identity < 0:
        raise SynthdbError(f"identity must be a non-negative int, got {identity!r}")
    return int(identity)


def _as_str(value: Any) -> str:
    """HDF5 string attributes come back as str or bytes depending on how they were written."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _h5_message(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@contextmanager
def _guard(path: Path, action: str) -> Iterator[None]:
    """Turn low-level h5py/OS failures (corrupt or truncated data) into a one-line SynthdbError."""
    try:
        yield
    except SynthdbError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise SynthdbError(
            f"{path}: cannot {action} (h5py: {_h5_message(exc)}); the file is damaged or not in the "
            "synthetics format, regenerate or re-copy it"
        ) from None


def _open_file(path: Path, mode: str) -> h5py.File:
    if mode in ("r", "r+") and not path.exists():
        raise SynthdbError(f"{path}: file not found; check the path")
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        if mode in ("r", "r+"):
            raise SynthdbError(
                f"{path}: not a readable HDF5 file, or truncated (h5py: {_h5_message(exc)}); "
                "regenerate or re-copy it"
            ) from None
        raise SynthdbError(
            f"{path}: cannot create file (h5py: {_h5_message(exc)}); "
            "check the directory exists and is writable"
        ) from None


def _write_header(f: h5py.File, magic: str) -> None:
    f.attrs["magic"] = magic
    f.attrs["major"] = FORMAT_MAJOR
    f.attrs["minor"] = FORMAT_MINOR


def _check_header(f: h5py.File, path: Path, magic: str) -> None:
    """Check magic and version. Same major and a minor up to ours are accepted; newer minors may carry
    fields this code would silently drop, so they are refused."""
    other = {SAMPLE_MAGIC: COLLECTION_MAGIC, COLLECTION_MAGIC: SAMPLE_MAGIC}[magic]
    reader = {SAMPLE_MAGIC: "read_sample()", COLLECTION_MAGIC: "SampleCollection.open()"}
    for key in ("magic", "major", "minor"):
        if key not in f.attrs:
            raise SynthdbError(
                f"{path}: missing root attribute {key!r}; this is not a {magic!r} file written by synthdb or "
                "the reference synthetics package, check the path"
            )
    found = _as_str(_attribute(f, "magic", path))
    if found != magic:
        fix = f"open it with {reader[other]}" if found == other else "check the path"
        raise SynthdbError(f"{path}: magic is {found!r}, expected {magic!r}; {fix}")
    try:
        major, minor = int(_attribute(f, "major", path)), int(_attribute(f, "minor", path))
    except (TypeError, ValueError):
        raise SynthdbError(f"{path}: major/minor attributes are not integers; the file is damaged") from None
    if major != FORMAT_MAJOR or minor > FORMAT_MINOR:
        raise SynthdbError(
            f"{path}: format version {major}.{minor} is not supported (this synthdb reads "
            f"{FORMAT_MAJOR}.0 to {FORMAT_MAJOR}.{FORMAT_MINOR}); re-export the file as version "
            f"{FORMAT_MAJOR}.{FORMAT_MINOR} or upgrade synthdb"
        )


def _write_group(group: h5py.Group, sample: H5Sample) -> None:
    """Write the Sample layout into ``group``, adding the batch dimension of 1 to every dataset."""
    if sample.network_type is not None:
        group.attrs["network_type"] = sample.network_type
    if sample.embedding_type is not None:
        group.attrs["embedding_type"] = sample.embedding_type
    for name in ARRAY_FIELDS:
        value = getattr(sample, name)
        if value is not None:
            group.create_dataset(name, data=np.asarray(value, dtype=np.float32)[np.newaxis])
    if sample.bfm_model is not None:
        bfm = group.create_group("bfm_model")
        for key in BFM_DIMS:
            bfm.create_dataset(key, data=np.asarray(sample.bfm_model[key], dtype=np.float32)[np.newaxis])


def _where(path: Path, obj: h5py.HLObject) -> str:
    """``file`` for the root, ``file:/00042/reference/w_latent`` for anything inside it."""
    return str(path) if obj.name == "/" else f"{path}:{obj.name}"


REGENERATE = "the file is damaged or crafted: regenerate it with synthdb or the reference package"


def _member(group: h5py.Group, name: str, path: Path) -> h5py.HLObject | None:
    """``group[name]``, or None when there is no such link; refused unless it is a hard link.

    The link is inspected before anything follows it: ``name in group`` and ``group[name]`` would
    already open the file an external link names.
    """
    link = name.encode()
    if not group.id.links.exists(link):  # H5Lexists looks at the link, not at what it points to
        return None
    kind = group.id.links.get_info(link).type
    if kind != h5l.TYPE_HARD:
        what = {h5l.TYPE_SOFT: "a soft link", h5l.TYPE_EXTERNAL: "an external link (to another file)"}
        raise SynthdbError(
            f"{path}:{group.name.rstrip('/')}/{name} is {what.get(kind, 'a user-defined link')}, "
            f"which synthetics files never hold; {REGENERATE}"
        )
    return group[name]


def _lookup(group: h5py.Group, relpath: str, path: Path) -> h5py.HLObject | None:
    """``group[relpath]`` (``label/bfm_model/id``), each step through :func:`_member`; None if absent."""
    obj: h5py.HLObject | None = group
    for name in relpath.split("/"):
        if not isinstance(obj, h5py.Group):
            return None
        obj = _member(obj, name, path)
    return obj


def _attribute(obj: h5py.HLObject, name: str, path: Path) -> Any:
    """Attribute ``name`` of ``obj`` (None when absent), refused unless it is a scalar."""
    if name not in obj.attrs:
        return None
    if obj.attrs.get_id(name).shape != ():
        raise SynthdbError(f"{_where(path, obj)}: attribute {name!r} is not a single value; {REGENERATE}")
    return obj.attrs[name]


def _text_attribute(group: h5py.Group, name: str, path: Path) -> str | None:
    value = _attribute(group, name, path)
    if value is None:
        return None
    text = _as_str(value)
    if len(text) > MAX_TEXT_ATTRIBUTE:
        raise SynthdbError(
            f"{_where(path, group)}: attribute {name!r} is {len(text)} characters long, more than the "
            f"{MAX_TEXT_ATTRIBUTE} a model name needs; {REGENERATE}"
        )
    return text


def _storage_problem(obj: h5py.Dataset) -> str | None:
    """Why reading ``obj`` could read another file or inflate past its shape, or None."""
    plist = obj.id.get_create_plist()
    if plist.get_layout() == h5d.VIRTUAL:
        return "is a virtual dataset (it maps data from other files)"
    if plist.get_external_count():
        return "keeps its data in an external file"
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if unknown := [code for code in filters if code not in FILTERS]:
        return f"uses HDF5 filter {unknown[0]}, not one of {', '.join(FILTERS.values())}"
    if plist.get_layout() != h5d.CHUNKED:
        return None
    chunk = plist.get_chunk()
    if any(c > s for c, s in zip(chunk, obj.shape, strict=True)):
        return f"has chunks {_describe_shape(chunk)} larger than its shape"
    raw = int(np.prod(chunk)) * obj.dtype.itemsize
    for i in range(obj.id.get_num_chunks()):
        stored = obj.id.get_chunk_info(i).size
        if stored > raw + CHUNK_SLACK:
            return f"has a chunk stored in {stored} bytes that holds {raw} (a compression bomb)"
    return None


def _checked_dataset(obj: h5py.HLObject, name: str, path: Path) -> h5py.Dataset:
    """``obj`` as the dataset of field ``name`` (``bfm_model/id`` for a coefficient group), after checking
    from its metadata alone that reading it is safe: a numeric dtype, the field's shape with a leading
    batch dimension of 1, and data held in this file within its size."""
    if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "fiu" or obj.dtype.itemsize > 8:
        raise SynthdbError(f"{_where(path, obj)} is not a numeric dataset; {REGENERATE}")
    if obj.ndim < 2 or obj.shape[0] != 1:
        raise SynthdbError(
            f"{_where(path, obj)} has shape {_describe_shape(obj.shape)}, expected a leading batch dimension "
            "of 1 (e.g. (1, 512)); rewrite the file with synthdb or the reference package"
        )
    if problem := _shape_problem(name, obj.shape[1:]):
        raise SynthdbError(f"{_where(path, obj)}: {problem} (after the batch dimension); {REGENERATE}")
    if problem := _storage_problem(obj):
        raise SynthdbError(f"{_where(path, obj)} {problem}; {REGENERATE}")
    return obj


def _read_row(group: h5py.Group, name: str, path: Path) -> np.ndarray | None:
    """The batchless float32 row of field ``name`` in ``group``, None when absent; checked before read."""
    obj = _lookup(group, name, path)
    if obj is None:
        return None
    return np.asarray(_checked_dataset(obj, name, path)[0], dtype=np.float32)


def _read_group(group: h5py.Group, path: Path) -> H5Sample:
    """Read the Sample layout from ``group``. ``bfm_model`` is looked up relative to ``group``."""
    values: dict[str, Any] = {}
    for name in ARRAY_FIELDS:
        if (row := _read_row(group, name, path)) is not None:
            values[name] = row
    bfm = _member(group, "bfm_model", path)
    if bfm is not None:
        if not isinstance(bfm, h5py.Group):
            raise SynthdbError(f"{_where(path, bfm)} is not a group; {REGENERATE}")
        rows = {key: _read_row(group, f"bfm_model/{key}", path) for key in BFM_DIMS}
        missing = [key for key, row in rows.items() if row is None]
        if missing:
            raise SynthdbError(f"{_where(path, bfm)} lacks {missing}; the file is damaged, regenerate it")
        values["bfm_model"] = rows
    for name in ("network_type", "embedding_type"):
        if (text := _text_attribute(group, name, path)) is not None:
            values[name] = text
    try:
        return H5Sample(**values)
    except SynthdbError as exc:
        raise SynthdbError(f"{_where(path, group)}: {exc}") from None


# ------------------------------------------------------------------------------------ single-sample file


def write_sample(path: PathLike, sample: H5Sample) -> None:
    """Write one sample to ``path`` in the reference single-sample layout, replacing any existing file.

    The file is written under a temporary name and renamed, so a crash never leaves a half-written file.
    """
    sample.validate()
    path = Path(path)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            _write_header(f, SAMPLE_MAGIC)
            _write_group(f, sample)

    try:
        write_atomically(path, write)
    except OSError as exc:
        raise SynthdbError(
            f"{path}: cannot write ({_h5_message(exc)}); check the directory is writable"
        ) from None


def read_sample(path: PathLike) -> H5Sample:
    """Read a single-sample file written by synthdb or the reference package."""
    path = Path(path)
    with _open_file(path, "r") as f, _guard(path, "read the sample"):
        _check_header(f, path, SAMPLE_MAGIC)
        return _read_group(f, path)


# ------------------------------------------------------------------------------------------- collection


class SampleCollection:
    """A ``samples.h5`` collection: identity -> label -> Sample, read and written in place on disk.

    Unlike the reference (which buffers everything and writes on ``save()``), each :meth:`add` goes to
    the file at once and reads stream one group at a time, so memory stays flat for large collections.
    Use as a context manager, or call :meth:`close`.

    Modes: ``"r"`` read only; ``"a"`` read and write, creating the file if missing; ``"w"`` create,
    truncating any existing file.
    """

    def __init__(self, path: PathLike, mode: Literal["r", "a", "w"] = "r") -> None:
        if mode not in ("r", "a", "w"):
            raise SynthdbError(f"SampleCollection mode must be 'r', 'a' or 'w', got {mode!r}")
        self.path = Path(path)
        self.writable = mode != "r"
        if mode == "w" or (mode == "a" and not self.path.exists()):
            self._file = _open_file(self.path, "w")
            _write_header(self._file, COLLECTION_MAGIC)
            return
        self._file = _open_file(self.path, "r" if mode == "r" else "r+")
        try:
            with _guard(self.path, "read the header"):
                _check_header(self._file, self.path, COLLECTION_MAGIC)
        except SynthdbError:
            self._file.close()
            raise

    @classmethod
    def open(cls, path: PathLike, mode: Literal["r", "a"] = "r") -> SampleCollection:
        """Open an existing collection (``"a"`` also creates a missing one)."""
        return cls(path, mode)

    @classmethod
    def create(cls, path: PathLike, overwrite: bool = False) -> SampleCollection:
        """Create a new, empty collection; refuse to clobber an existing file unless ``overwrite``."""
        if Path(path).exists() and not overwrite:
            raise SynthdbError(
                f"{path}: already exists; pass overwrite=True, "
                "or use SampleCollection.open(path, 'a') to add to it"
            )
        return cls(path, "w")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SampleCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SampleCollection({str(self.path)!r}, writable={self.writable})"

    # ---- layout helpers

    def _identity_group(self, identity: int) -> h5py.Group | None:
        """The group of ``identity``, found by name (a B-tree lookup, no scan of the file)."""
        name = f"{_check_identity(identity):05d}"
        with _guard(self.path, f"find identity {identity}"):
            group = _member(self._file, name, self.path)
        if group is not None and not isinstance(group, h5py.Group):
            raise SynthdbError(f"{self.path}:/{name} is not a group; the file is damaged, regenerate it")
        return group

    # ---- writing

    def add(self, identity: int, label: str | int, sample: H5Sample, replace: bool = False) -> None:
        """Store ``sample`` under (identity, label); ``label`` may be an int and is normalised.

        An existing (identity, label) raises unless ``replace=True``, which deletes the old group on disk
        and writes the new one (HDF5 keeps the freed bytes until the file is repacked).
        """
        if not self.writable:
            raise SynthdbError(
                f"{self.path}: opened read-only; open it with SampleCollection.open(path, 'a')"
            )
        if not isinstance(sample, H5Sample):
            raise SynthdbError(f"add() needs an H5Sample, got {type(sample).__name__}")
        name = normalize_label(label)
        try:
            sample.validate()
        except SynthdbError as exc:
            raise SynthdbError(f"{self.path}: identity {identity}, label {name!r}: {exc}") from None
        with _guard(self.path, "write the sample"):
            group = self._identity_group(identity)
            if group is None:
                group = self._file.create_group(f"{_check_identity(identity):05d}")
            if _member(group, name, self.path) is not None:
                if not replace:
                    raise SynthdbError(
                        f"{self.path}: identity {identity} already has label {name!r}; "
                        "pass replace=True to overwrite it, or use another label"
                    )
                del group[name]
            _write_group(group.create_group(name), sample)

    def flush(self) -> None:
        self._file.flush()

    # ---- reading

    def identities(self) -> list[int]:
        """All identities, in numeric order (the file's own order is lexicographic)."""
        found: list[int] = []
        with _guard(self.path, "list identities"):
            for name in self._file:  # link names only: nothing is followed before _member checks it
                obj = _member(self._file, name, self.path)
                if not (isinstance(obj, h5py.Group) and name.isdigit() and name == f"{int(name):05d}"):
                    raise SynthdbError(
                        f"{self.path}: root member {name!r} is not an identity group (int zero-padded to 5 "
                        "digits); the file is damaged or not a synthetics collection"
                    )
                found.append(int(name))
        return sorted(found)

    def labels(self, identity: int) -> list[str]:
        """Labels of one identity, in natural order (``augmentation_2`` before ``augmentation_10``)."""
        group = self._identity_group(identity)
        if group is None:
            raise SynthdbError(f"{self.path}: no identity {identity}; see identities() for those present")
        with _guard(self.path, f"list labels of identity {identity}"):
            return sorted(group.keys(), key=natural_sort_key)

    def __contains__(self, key: tuple[int, str | int]) -> bool:
        identity, label = key
        group = self._identity_group(identity)
        return group is not None and _member(group, normalize_label(label), self.path) is not None

    def __iter__(self) -> Iterator[tuple[int, str]]:
        """Yield (identity, label) pairs: identities numerically, labels naturally."""
        for identity in self.identities():
            for label in self.labels(identity):
                yield identity, label

    def __len__(self) -> int:
        with _guard(self.path, "count samples"):
            return sum(len(self._identity_group(identity)) for identity in self.identities())

    def get(self, identity: int, label: str | int) -> H5Sample:
        """Read one sample; raises SynthdbError if it is not in the file."""
        name = normalize_label(label)
        group = self._identity_group(identity)
        with _guard(self.path, f"read identity {identity}, label {name!r}"):
            sample = None if group is None else _member(group, name, self.path)
            if sample is None:
                raise SynthdbError(
                    f"{self.path}: no sample for identity {identity}, label {name!r}; "
                    "see identities() and labels(identity) for what is present"
                )
            if not isinstance(sample, h5py.Group):
                raise SynthdbError(f"{_where(self.path, sample)} is not a group; {REGENERATE}")
            return _read_group(sample, self.path)

    def iter_samples(self, identities: Iterable[int] | None = None) -> Iterator[tuple[int, str, H5Sample]]:
        """Stream (identity, label, Sample) in iteration order, one group in memory at a time.

        ``identities`` restricts (and orders) the identities read; missing ones raise.
        """
        chosen = self.identities() if identities is None else [_check_identity(i) for i in identities]
        for identity in chosen:
            for label in self.labels(identity):
                yield identity, label, self.get(identity, label)

    def read_arrays(
        self, field: str, identities: Iterable[int] | None = None
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Read one field of every sample that has it: ``(identity int64[N], labels, float32[N, ...])``.

        ``field`` is one of ARRAY_FIELDS or ``bfm_model/<key>``. Rows follow iteration order. Datasets are
        read straight into one preallocated array, which is the fastest this layout allows; all rows must
        share a shape (else use :meth:`iter_samples`).
        """
        if field not in ARRAY_FIELDS and field not in BFM_FIELDS:
            raise SynthdbError(f"unknown field {field!r}; use one of {list(ARRAY_FIELDS + BFM_FIELDS)}")
        chosen = self.identities() if identities is None else [_check_identity(i) for i in identities]
        ids: list[int] = []
        labels: list[str] = []
        datasets: list[h5py.Dataset] = []
        with _guard(self.path, f"read {field}"):
            for identity in chosen:
                group = self._identity_group(identity)
                for label in self.labels(identity):
                    found = _lookup(group, f"{label}/{field}", self.path)
                    if found is not None:
                        datasets.append(_checked_dataset(found, field, self.path))
                        ids.append(identity)
                        labels.append(label)
            rows = {ds.shape[1:] for ds in datasets}
            if len(rows) > 1:
                raise SynthdbError(
                    f"{self.path}: {field} has mixed shapes {sorted(rows)}; "
                    "read it with iter_samples() instead"
                )
            row = rows.pop() if rows else _EMPTY_ROWS[field]
            if datasets and (problem := _shape_problem(field, row)):
                raise SynthdbError(f"{self.path}: {problem}; the file is damaged, regenerate it")
            out = np.empty((len(datasets), *row), dtype=np.float32)
            for i, ds in enumerate(datasets):
                ds.read_direct(out, source_sel=np.s_[0:1], dest_sel=np.s_[i : i + 1])
        return np.asarray(ids, dtype=np.int64), labels, out
