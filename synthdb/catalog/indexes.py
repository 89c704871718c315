"""``vector_index`` rows: the FAISS index files built over a dataset's embeddings (``synthdb index build``).

One row per (dataset, model, factory, per) is kept current: a rebuild or an extension replaces the row's
file, so a later check finds the index that covers today's shards (:mod:`synthdb.analysis.index`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import VectorIndex

_index = VectorIndex.__table__


@dataclass(frozen=True)
class IndexRow:
    """What an index covers and where its file is (``path`` relative to the store)."""

    model: str
    dataset_ids: list[int]
    shard_ids: list[int]
    factory: str
    metric: str
    per: str
    path: str
    ntotal: int
    run_id: int | None
    id: int | None = None


def find(catalog: Catalog, dataset_id: int, model: str, factory: str, per: str) -> IndexRow | None:
    """The index of one dataset's ``model`` embeddings built with ``factory`` per ``per``, if any."""
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            sa.select(_index).where(_index.c.model == model, _index.c.factory == factory, _index.c.per == per)
        ).all()
    for row in rows:
        if list(row.dataset_ids) == [dataset_id]:
            return IndexRow(
                model=row.model,
                dataset_ids=list(row.dataset_ids),
                shard_ids=list(row.shard_ids),
                factory=row.factory,
                metric=row.metric,
                per=row.per,
                path=row.path,
                ntotal=int(row.ntotal),
                run_id=row.run_id,
                id=row.id,
            )
    return None


def save(catalog: Catalog, row: IndexRow) -> int:
    """Insert ``row`` (``id`` None) or replace the row with its ``id``; return the id."""
    values = {name: value for name, value in asdict(row).items() if name != "id"}
    with catalog.begin() as conn:
        if row.id is None:
            return conn.execute(sa.insert(_index).returning(_index.c.id), values).scalar_one()
        conn.execute(sa.update(_index).where(_index.c.id == row.id).values(**values))
        return row.id


def paths(catalog: Catalog) -> list[str]:
    """The files of every index (store-relative): fsck checks they exist and that no other file does."""
    with catalog.engine.connect() as conn:
        return list(conn.execute(sa.select(_index.c.path)).scalars())


def covering(conn: Connection, dataset_id: int) -> list[int]:
    """Ids of the indexes whose vectors include a dataset's (inside the caller's transaction): deleting the
    dataset deletes them, since their vectors would point at samples that are gone."""
    rows = conn.execute(sa.select(_index.c.id, _index.c.dataset_ids)).all()
    return [row.id for row in rows if dataset_id in (row.dataset_ids or [])]


def delete_in(conn: Connection, index_ids: list[int]) -> None:
    """Delete index rows inside the caller's transaction (their files become orphans ``gc`` removes)."""
    if index_ids:
        conn.execute(sa.delete(_index).where(_index.c.id.in_(index_ids)))
