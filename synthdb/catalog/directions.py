"""``direction_set`` rows: covariate directions stored by name (:mod:`synthdb.latent.directions` builds
and reads them; this module only moves them in and out of the catalog)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import sqlalchemy as sa

from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import DirectionSet
from synthdb.errors import SynthdbError

_set = DirectionSet.__table__


@dataclass(frozen=True)
class DirectionSetRow:
    """A stored set: ``directions`` is one JSON object per covariate (normal, classes, side statistics)."""

    name: str
    generator: str
    protocol: str
    w_dim: int
    dataset_id: int | None
    run_id: int | None
    directions: list[dict[str, Any]]


_COLUMNS = [_set.c[f.name] for f in fields(DirectionSetRow)]


def check_name_free(catalog: Catalog, name: str) -> None:
    """Refuse a name a set has already (checked before long work, and again when saving)."""
    with catalog.engine.connect() as conn:
        taken = conn.execute(sa.select(_set.c.id).where(_set.c.name == name)).first() is not None
    if taken:
        raise _taken(name)


def _taken(name: str) -> SynthdbError:
    return SynthdbError(f"a direction set named '{name}' exists already: choose another --name")


def insert(catalog: Catalog, row: DirectionSetRow) -> int:
    """Store a new set and return its id; a taken name is an error (runs refer to sets by name, so a name
    never changes meaning), also when another process saves the same name at the same moment."""
    try:
        with catalog.begin() as conn:
            if conn.execute(sa.select(_set.c.id).where(_set.c.name == row.name)).first() is not None:
                raise _taken(row.name)
            return conn.execute(sa.insert(_set).returning(_set.c.id), asdict(row)).scalar_one()
    except sa.exc.IntegrityError:  # the name's unique constraint, hit by a concurrent save
        check_name_free(catalog, row.name)
        raise


def find(catalog: Catalog, name: str) -> DirectionSetRow | None:
    """The set called ``name``, or None."""
    with catalog.engine.connect() as conn:
        found = conn.execute(sa.select(*_COLUMNS).where(_set.c.name == name)).first()
    return None if found is None else DirectionSetRow(**found._asdict())


def every_set(catalog: Catalog) -> list[DirectionSetRow]:
    """Every stored set, by name."""
    with catalog.engine.connect() as conn:
        found = conn.execute(sa.select(*_COLUMNS).order_by(_set.c.name)).all()
    return [DirectionSetRow(**row._asdict()) for row in found]
