"""Direction sets: covariate directions in a generator's W space, stored in the catalog by name.

A direction is what a linear SVM learns on projected Multi-PIE latents (spec 8.1): the unit normal of
its hyperplane through the origin, which side is which class, and the statistics of the training
projections ``p = w . n`` on each side (split by the sign of p, not by class, as the reference does).
``LatentEdit`` and the ``disco``/``covariates`` variations use the normals and the side means.

The reference kept these in a pickle of sklearn objects (spec 2.7). Here a set is one catalog row
(``direction_set``) holding plain JSON: nothing is unpickled, the floats round-trip exactly
(float32 -> JSON double -> float32), and ``synthdb query`` can read them. A set is tied to the
generator whose W space it describes, and loading it for another generator is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from synthdb.catalog import directions as direction_rows
from synthdb.catalog.engine import Catalog
from synthdb.errors import SynthdbError

EXPRESSIONS = ("smile", "scream", "disgust", "squint", "surprise")
"""The expression directions, neutral vs each, in the reference's order."""
COVARIATES = ("pose", "illumination", *EXPRESSIONS)
"""Every covariate a set can hold, in the order sets store them."""

@dataclass(frozen=True)
class SideStats:
    """Training projections on one side of a hyperplane: how many, min, max, mean, std (population)."""

    count: int
    min: float
    max: float
    mean: float
    std: float

    @classmethod
    def of(cls, values: np.ndarray) -> SideStats:
        v = np.asarray(values, dtype=np.float64)
        return cls(len(v), float(v.min()), float(v.max()), float(v.mean()), float(v.std()))


@dataclass(frozen=True)
class Direction:
    """One covariate: the SVM's unit normal (pointing from ``classes[0]`` to ``classes[1]``), the
    training counts of the two classes, the training accuracy, whether the solver converged, and the
    projection statistics of the negative and positive sides."""

    name: str
    normal: np.ndarray
    classes: tuple[str, str]
    counts: tuple[int, int]
    accuracy: float
    converged: bool
    neg: SideStats
    pos: SideStats

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "classes": list(self.classes),
            "counts": list(self.counts),
            "accuracy": self.accuracy,
            "converged": self.converged,
            "neg": asdict(self.neg),
            "pos": asdict(self.pos),
            "normal": np.asarray(self.normal, dtype=np.float32).tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Direction:
        return cls(
            name=data["name"],
            normal=np.asarray(data["normal"], dtype=np.float32),
            classes=(data["classes"][0], data["classes"][1]),
            counts=(int(data["counts"][0]), int(data["counts"][1])),
            accuracy=float(data["accuracy"]),
            converged=bool(data["converged"]),
            neg=SideStats(**data["neg"]),
            pos=SideStats(**data["pos"]),
        )


@dataclass
class DirectionSet:
    """Named covariate directions of one generator, fitted on one projections dataset."""

    name: str
    generator: str
    protocol: str
    directions: list[Direction]
    dataset_id: int | None = None
    run_id: int | None = None

    def __post_init__(self) -> None:
        names = self.names
        if not self.name or len(self.name) > 200:
            raise SynthdbError(f"direction set name {self.name!r} must have 1 to 200 characters")
        if unknown := [n for n in names if n not in COVARIATES]:
            raise SynthdbError(f"unknown covariate directions {unknown}: use {', '.join(COVARIATES)}")
        if len(set(names)) != len(names) or not names:
            raise SynthdbError(f"direction set {self.name} must name each covariate once, got {names}")
        dims = {d.normal.shape for d in self.directions}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise SynthdbError(f"direction set {self.name}: normals must be vectors of one size, got {dims}")

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.directions]

    @property
    def w_dim(self) -> int:
        return int(self.directions[0].normal.shape[0])

    @property
    def normals(self) -> np.ndarray:
        """(K, w_dim) float32 unit normals, in :attr:`names` order."""
        return np.stack([d.normal for d in self.directions]).astype(np.float32)

    @property
    def neg_means(self) -> np.ndarray:
        return np.array([d.neg.mean for d in self.directions], dtype=np.float32)

    @property
    def pos_means(self) -> np.ndarray:
        return np.array([d.pos.mean for d in self.directions], dtype=np.float32)

    def require(self, names: tuple[str, ...] | list[str], purpose: str) -> None:
        """Refuse, naming the fix, when ``purpose`` needs covariates this set lacks."""
        if missing := [n for n in names if n not in self.names]:
            raise SynthdbError(
                f"direction set {self.name} has no {', '.join(missing)} direction (it holds "
                f"{', '.join(self.names)}), which {purpose} needs: analyse with --protocol all"
            )

    def check_generator(self, generator: str, w_dim: int) -> None:
        """Refuse a generator other than the one whose W space the set describes."""
        if generator != self.generator or w_dim != self.w_dim:
            raise SynthdbError(
                f"direction set {self.name} describes the W space of {self.generator} (w_dim {self.w_dim}), "
                f"not of {generator} (w_dim {w_dim}): pass --generator {self.generator} or a set "
                "analysed on that generator's projections"
            )

    def save(self, catalog: Catalog) -> int:
        """Insert the set and return its row id; a taken name is an error (runs refer to sets by name,
        so a name never changes meaning)."""
        return direction_rows.insert(
            catalog,
            direction_rows.DirectionSetRow(
                name=self.name,
                generator=self.generator,
                protocol=self.protocol,
                w_dim=self.w_dim,
                dataset_id=self.dataset_id,
                run_id=self.run_id,
                directions=[d.to_json() for d in self.directions],
            ),
        )

    @classmethod
    def load(cls, catalog: Catalog, name: str) -> DirectionSet:
        """The set called ``name``, or an error listing the sets that exist."""
        row = direction_rows.find(catalog, name)
        if row is None:
            known = ", ".join(s.name for s in list_sets(catalog)[:20]) or "none yet"
            raise SynthdbError(
                f"no direction set named '{name}' in the catalog (known: {known}): "
                "check the name, or make one with `synthdb latent analyze`"
            )
        return cls(
            name=row.name,
            generator=row.generator,
            protocol=row.protocol,
            directions=[Direction.from_json(d) for d in row.directions],
            dataset_id=row.dataset_id,
            run_id=row.run_id,
        )


@dataclass(frozen=True)
class SetInfo:
    """A direction set as listed: its name, generator, protocol and covariates."""

    name: str
    generator: str
    protocol: str
    names: list[str]


def list_sets(catalog: Catalog) -> list[SetInfo]:
    """Every direction set in the catalog, by name."""
    return [
        SetInfo(r.name, r.generator, r.protocol, [d["name"] for d in r.directions])
        for r in direction_rows.every_set(catalog)
    ]
