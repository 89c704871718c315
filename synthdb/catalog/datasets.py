"""Dataset rows: create and look up datasets by name."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import DATASET_KINDS, Dataset, Shard
from synthdb.errors import SynthdbError

_dataset = Dataset.__table__


def create_dataset(
    catalog: Catalog,
    name: str,
    kind: str,
    source: str,
    root: str | None = None,
    description: str | None = None,
    run_id: int | None = None,
    attributes: dict[str, Any] | None = None,
) -> int:
    """Create a dataset and return its id; a taken name is an error (names are how users refer to them)."""
    if kind not in DATASET_KINDS:
        raise SynthdbError(f"dataset kind '{kind}' is not one of {', '.join(DATASET_KINDS)}")
    with catalog.begin() as conn:
        taken = conn.execute(sa.select(_dataset.c.id).where(_dataset.c.name == name)).first()
        if taken is not None:
            raise SynthdbError(f"a dataset named '{name}' exists already: choose another --name")
        return conn.execute(
            sa.insert(_dataset).returning(_dataset.c.id),
            {
                "name": name,
                "kind": kind,
                "source": source,
                "root": root,
                "description": description,
                "created_by_run_id": run_id,
                "attributes": attributes,
            },
        ).scalar_one()


def dataset_id(catalog: Catalog, name: str) -> int:
    """The id of the dataset called ``name``, or an error listing what exists."""
    with catalog.engine.connect() as conn:
        found = conn.execute(sa.select(_dataset.c.id).where(_dataset.c.name == name)).scalar_one_or_none()
        if found is not None:
            return found
        names = conn.execute(sa.select(_dataset.c.name).order_by(_dataset.c.name).limit(20)).scalars().all()
    known = ", ".join(names) if names else "none yet"
    raise SynthdbError(f"no dataset named '{name}' in the catalog (known: {known}): check the name")


def latent_spaces(catalog: Catalog, dataset: int) -> list[str]:
    """The generators whose latents a dataset's committed shards hold (usually one), sorted."""
    shard = Shard.__table__
    with catalog.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(shard.c.space)
                .where(shard.c.dataset_id == dataset, shard.c.content == "latent")
                .where(shard.c.state == "committed")
                .distinct()
                .order_by(shard.c.space)
            ).scalars()
        )
