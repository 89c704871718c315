"""Rows of the ``model`` table: which weights file a workspace registered for each model card.

``synthdb models add`` / ``fetch`` record the file they checked here, so runs can name the exact weights
they used and :func:`synthdb.zoo.weights_path` finds a file wherever ``add`` put it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from synthdb.catalog.engine import Catalog
from synthdb.catalog.schema import Model

_model = Model.__table__


@dataclass(frozen=True)
class ModelRow:
    """What a registration stores about one card's weights."""

    name: str
    kind: str
    architecture: str
    weights_path: str
    sha256: str
    license: str
    params: dict[str, Any]


def registered_path(catalog: Catalog, name: str) -> str | None:
    """The weights file registered for card ``name``, or None when it never was."""
    with catalog.engine.connect() as conn:
        found = conn.execute(sa.select(_model.c.weights_path).where(_model.c.name == name))
        return found.scalar_one_or_none()


def registered_names(catalog: Catalog) -> set[str]:
    """Names of every registered model."""
    with catalog.engine.connect() as conn:
        return set(conn.execute(sa.select(_model.c.name)).scalars())


def register(catalog: Catalog, row: ModelRow) -> None:
    """Insert or replace the registration of ``row.name`` (re-adding a card points it at the new file)."""
    values = {
        "kind": row.kind,
        "architecture": row.architecture,
        "weights_path": row.weights_path,
        "sha256": row.sha256,
        "license": row.license,
        "params": row.params,
    }
    with catalog.begin() as conn:
        if conn.execute(sa.select(_model.c.id).where(_model.c.name == row.name)).first() is None:
            conn.execute(sa.insert(_model).values(name=row.name, **values))
        else:
            conn.execute(sa.update(_model).where(_model.c.name == row.name).values(**values))


def registered_rows(catalog: Catalog, names: set[str]) -> list[ModelRow]:
    """The registrations of the models called ``names`` (a report cites the weights its data came from)."""
    with catalog.engine.connect() as conn:
        found = conn.execute(
            sa.select(*(_model.c[name] for name in ModelRow.__dataclass_fields__)).where(
                _model.c.name.in_(sorted(names))
            )
        )
        return [ModelRow(**row._asdict()) for row in found]
