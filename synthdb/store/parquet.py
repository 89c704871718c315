"""Vector shards as Parquet: ``sample_id``, ``identity_id`` and fixed-size float32 list columns.

A vector of several dimensions (``w_plus``: num_ws x w_dim) is stored flat, one fixed-size list per row;
its shape is recorded in the file's key-value metadata under ``synthdb.shapes``.

One file holds the vectors of one work unit. Vectors are stored raw (embeddings are not normalised;
distances normalise). Vector columns are written uncompressed and without dictionaries or
statistics: float noise does not compress, and skipping those passes makes the write about 1.6x
faster. The id columns keep zstd and statistics so DuckDB can prune row groups when joining.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthdb.errors import SynthdbError
from synthdb.files import file_digest

ID_COLUMNS = ("sample_id", "identity_id")
SHAPES_KEY = "synthdb.shapes"
"""File metadata key: JSON ``{column: per-row shape}``, so that readers (pyarrow, polars, DuckDB's
``parquet_kv_metadata``) can reshape a flat ``w_plus`` of 7,168 values into (14, 512) without synthdb."""
ROW_GROUP_ROWS = 65_536


@dataclass(frozen=True)
class WrittenFile:
    rows: int
    bytes: int
    sha256: str


def validate_vectors(
    vectors: dict[str, np.ndarray], rows: int, expected: dict[str, tuple[int, ...]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Check every vector column has ``rows`` rows of one shape; return the per-row shapes.

    ``expected`` pins shapes (e.g. the embedder's output size) so a wrong size fails before any write.
    """
    if not vectors:
        raise SynthdbError("a shard needs at least one vector column")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, array in vectors.items():
        if name in ID_COLUMNS:
            raise SynthdbError(f"vector column name '{name}' is reserved for ids: rename it")
        array = np.asarray(array)
        if array.ndim < 2 or array.shape[0] != rows:
            raise SynthdbError(
                f"vector column '{name}' has shape {array.shape}, expected ({rows}, ...) "
                f"(one row per sample): pass one vector per sample"
            )
        shape = tuple(int(d) for d in array.shape[1:])
        if expected and name in expected and tuple(expected[name]) != shape:
            raise SynthdbError(
                f"vector column '{name}' has per-row shape {shape}, expected {tuple(expected[name])}: "
                "check the model that produced it"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise SynthdbError(
                f"vector column '{name}' has dtype {array.dtype}: vectors must be floating point"
            )
        shapes[name] = shape
    return shapes


def to_table(
    sample_ids: np.ndarray,
    identity_ids: Sequence[int | None] | np.ndarray | None,
    vectors: dict[str, np.ndarray],
    metadata: dict[str, str] | None = None,
) -> pa.Table:
    """Build the Arrow table of a shard; vectors are flattened into FixedSizeList<float32>[prod(shape)].

    ``identity_ids`` may be None, or hold None, for samples without an identity (faces of a group photo).
    """
    columns: dict[str, pa.Array] = {
        "sample_id": pa.array(np.asarray(sample_ids, dtype=np.int64)),
        "identity_id": (
            pa.nulls(len(sample_ids), pa.int64())
            if identity_ids is None
            else pa.array(identity_ids, pa.int64())
        ),
    }
    shapes = {}
    for name, array in vectors.items():
        flat = np.ascontiguousarray(array, dtype=np.float32).reshape(len(array), -1)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
        shapes[name] = [int(d) for d in np.shape(array)[1:]]
    table = pa.table(columns)
    stored = {f"synthdb.{k}": v for k, v in (metadata or {}).items()}
    return table.replace_schema_metadata({**stored, SHAPES_KEY: json.dumps(shapes, sort_keys=True)})


def write_table(table: pa.Table, path: Path) -> WrittenFile:
    """Write ``table`` to ``path``, fsync it, and return its size and sha256."""
    vector_columns = [c for c in table.column_names if c not in ID_COLUMNS]
    try:
        pq.write_table(
            table,
            path,
            row_group_size=ROW_GROUP_ROWS,
            compression={**{c: "zstd" for c in ID_COLUMNS}, **{c: "none" for c in vector_columns}},
            use_dictionary=False,
            write_statistics=list(ID_COLUMNS),
        )
        # Hash by reading back from the page cache: cheaper than hashing inside the writer's callbacks.
        size, sha256 = file_digest(path, fsync=True)
    except OSError as exc:  # a full disk, a quota, a size limit: the commit rolls back, nothing is lost
        raise SynthdbError(
            f"cannot write shard {path} ({str(exc).splitlines()[0]}): free space in the store "
            f"({path.parent.parent}) and re-run the command; nothing was committed"
        ) from None
    return WrittenFile(rows=table.num_rows, bytes=size, sha256=sha256)


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a shard, turning unreadable or foreign files into one clear error."""
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise SynthdbError(
            f"shard {path} is missing: run `synthdb fsck` to see what else is affected"
        ) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise SynthdbError(
            f"shard {path} is unreadable ({str(exc).splitlines()[0]}): run `synthdb fsck`, "
            "then re-run the command that wrote it"
        ) from exc


def read_vectors(path: Path, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(sample_ids, identity_ids, vectors[N, D])`` of one vector column of a shard."""
    table = read_table(path, ["sample_id", "identity_id", column])
    values = table.column(column).combine_chunks()
    width = values.type.list_size
    flat = values.flatten().to_numpy(zero_copy_only=False)
    return (
        table.column("sample_id").to_numpy(),
        table.column("identity_id").to_numpy(),
        flat.reshape(len(table), width).astype(np.float32, copy=False),
    )
