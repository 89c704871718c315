"""The catalog's tables as a typed SQLAlchemy 2.0 ORM.

The catalog is the single source of truth: every dataset, identity, sample, protocol, model, run,
vector shard and index is a row here. Bulk vectors are not: they live in Parquet shards that the
``shard`` table registers. Every change to this module needs an Alembic revision in ``migrations/``;
``tests/catalog/test_migrate.py`` fails when the two drift.

Enumerated columns (kind, role, status, state, ...) are plain strings in the database, so that adding
a value never needs a schema migration; in Python they are the ``StrEnum`` classes below, whose members
compare equal to (and are stored as) those strings, so code never spells a status or a kind by hand.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from synthdb.errors import SynthdbError

# Integer on SQLite keeps ``INTEGER PRIMARY KEY`` (the rowid alias that autoincrements);
# PostgreSQL gets 64-bit ids, enough for WebFace42M-sized tables many times over.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class DatasetKind(StrEnum):
    GENUINE = "genuine"
    SYNTHETIC = "synthetic"


class SampleRole(StrEnum):
    GENUINE = "genuine"
    REFERENCE = "reference"
    VARIATION = "variation"
    PROJECTION = "projection"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class RunKind(StrEnum):
    """What a run did: the command family that recorded it (``synthdb runs list --kind``)."""

    IMPORT = "import"
    EMBED = "embed"
    INDEX = "index"
    CHECK = "check"
    EXPORT = "export"
    IMAGES = "images"
    REFERENCES = "references"
    VARIATIONS = "variations"
    PROJECT = "project"
    LATENT_ANALYSIS = "latent-analysis"


class ShardContent(StrEnum):
    LATENT = "latent"
    EMBEDDING = "embedding"
    STATS = "stats"
    CHECKPOINT = "checkpoint"
    RESULT = "result"


class CheckKind(StrEnum):
    """Which check wrote a ``result`` shard (its space); ``synthdb query`` has one view per kind."""

    NEAREST = "nearest"


class ShardState(StrEnum):
    STAGED = "staged"
    COMMITTED = "committed"
    RETIRED = "retired"


E = TypeVar("E", bound=StrEnum)


def member(kind: type[E], value: str, what: str) -> E:
    """``value`` as a member of ``kind``, or a one-line error naming the values allowed.

    Python 3.11's ``value in kind`` raises TypeError for a plain string, so values are checked here.
    """
    try:
        return kind(value)
    except ValueError:
        raise SynthdbError(f"{what} '{value}' is not one of {', '.join(kind)}") from None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Run(Base):
    """One execution of a command that writes: its parameters, seed, progress and outcome."""

    __tablename__ = "run"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    algorithm: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    shard_index: Mapped[int | None] = mapped_column(Integer)
    shard_count: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    synthdb_version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None]


class Dataset(Base):
    """A genuine database (FFHQ, MultiPIE, ...) or a synthetic one made by a run."""

    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64))
    root: Mapped[str | None] = mapped_column(Text)
    created_by_run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())
    description: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any] | None]


class Identity(Base):
    """A person (genuine) or a synthetic identity, labelled by its external id within a dataset."""

    __tablename__ = "identity"
    __table_args__ = (UniqueConstraint("dataset_id", "label"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any] | None]


class Sample(Base):
    """One image (or latent-only sample) of an identity; ``path`` is relative to the dataset root."""

    __tablename__ = "sample"
    __table_args__ = (
        UniqueConstraint("dataset_id", "key"),
        Index("ix_sample_identity_id", "identity_id"),
        Index("ix_sample_run_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identity.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(512))
    path: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any] | None]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class SampleIssue(Base):
    """A problem a run met with one sample (unreadable file, no face, several faces), kept as data.

    Runs never silently drop or replace a sample: they record why here, and resumed runs treat a
    recorded issue as done so they do not retry a file that cannot work.
    """

    __tablename__ = "sample_issue"
    __table_args__ = (
        Index("ix_sample_issue_sample_id", "sample_id"),
        Index("ix_sample_issue_run_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("sample.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id"))
    space: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class Protocol(Base):
    """An evaluation protocol of a dataset (MultiPIE U, LFW pairs, FFHQ training/validation)."""

    __tablename__ = "protocol"
    __table_args__ = (UniqueConstraint("dataset_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)


class ProtocolGroup(Base):
    """A group of a protocol (train, dev, eval, a fold)."""

    __tablename__ = "protocol_group"
    __table_args__ = (UniqueConstraint("protocol_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    protocol_id: Mapped[int] = mapped_column(ForeignKey("protocol.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))


class GroupMember(Base):
    """A sample's membership of a protocol group, with its purpose (train, enroll, probe)."""

    __tablename__ = "group_member"
    __table_args__ = (Index("ix_group_member_sample_id", "sample_id"),)

    group_id: Mapped[int] = mapped_column(
        ForeignKey("protocol_group.id", ondelete="CASCADE"), primary_key=True
    )
    sample_id: Mapped[int] = mapped_column(ForeignKey("sample.id", ondelete="CASCADE"), primary_key=True)
    purpose: Mapped[str | None] = mapped_column(String(32))


class VerificationPair(Base):
    """One comparison a protocol group prescribes, in the order of the protocol's file.

    A side is a sample (LFW: two images) or a template, a set of samples scored as one (IJB-C: the
    template id, which those samples carry as their ``label``); exactly one of the two columns of a
    side is set. ``position`` is the pair's line in its file, so re-importing skips pairs already
    present and readers get them back in the order the protocol's folds expect. ``genuine`` says
    whether both sides show the same person (None when the file does not say).
    """

    __tablename__ = "verification_pair"
    __table_args__ = (
        Index("ix_verification_pair_first_sample_id", "first_sample_id"),
        Index("ix_verification_pair_second_sample_id", "second_sample_id"),
    )

    group_id: Mapped[int] = mapped_column(
        ForeignKey("protocol_group.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    first_sample_id: Mapped[int | None] = mapped_column(ForeignKey("sample.id", ondelete="CASCADE"))
    second_sample_id: Mapped[int | None] = mapped_column(ForeignKey("sample.id", ondelete="CASCADE"))
    first_template: Mapped[str | None] = mapped_column(String(200))
    second_template: Mapped[str | None] = mapped_column(String(200))
    genuine: Mapped[bool | None] = mapped_column(Boolean)


class Model(Base):
    """A network synthdb knows: generator, embedder or detector, with its weights and licence."""

    __tablename__ = "model"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    architecture: Mapped[str] = mapped_column(String(100))
    weights_path: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    license: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class Shard(Base):
    """An immutable Parquet (or HDF5) file of vectors in the store, written by the commit protocol.

    ``unit`` names the work unit of the run that produced it, so a resumed run can tell which units
    are done. ``columns`` maps each vector column to its shape per row, e.g. ``{"embedding": [128]}``.
    """

    __tablename__ = "shard"
    __table_args__ = (
        Index("ix_shard_dataset_id_content", "dataset_id", "content"),
        Index("ix_shard_run_id_unit", "run_id", "unit"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(String(16))
    space: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    format: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    columns: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class VectorIndex(Base):
    """A FAISS index file over the embedding shards of one or more datasets for one model."""

    __tablename__ = "vector_index"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    dataset_ids: Mapped[list[Any]] = mapped_column(default=list)
    shard_ids: Mapped[list[Any]] = mapped_column(default=list)
    factory: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(32))
    per: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    ntotal: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class DirectionSet(Base):
    """Covariate directions in a generator's W space (``synthdb latent analyze``), found by name.

    ``directions`` holds, per covariate (pose, illumination, smile, ...), the unit normal of its
    linear SVM as a JSON list of ``w_dim`` floats, the two class names and counts, and the statistics
    of the training projections on each side of the hyperplane. A few thousand floats per set: JSON in
    the row keeps a set readable by ``synthdb query`` and needs no shard file (and never a pickle).
    ``dataset_id`` is the projections dataset the SVMs were fitted on.
    """

    __tablename__ = "direction_set"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    generator: Mapped[str] = mapped_column(String(200))
    protocol: Mapped[str] = mapped_column(String(32))
    w_dim: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset.id", ondelete="SET NULL"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id"))
    directions: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class IdReservation(Base):
    """The next id a writer may take for a table whose ids are handed out before the rows go in (SQLite).

    The commit protocol writes shard files that name their sample and identity ids before those rows exist
    (:mod:`synthdb.catalog.commits`), in a short transaction of its own, so no other writer may take the
    same ids meanwhile. PostgreSQL's sequences already work that way; SQLite has none, so
    :func:`synthdb.catalog.bulk.allocate_ids` keeps the next free id of each such table here.
    """

    __tablename__ = "id_reservation"

    table_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_id: Mapped[int] = mapped_column(BigInteger)


class StoreRecord(Base):
    """The store that holds this catalog's shard files: its marker id and where it was first set up.

    A catalog's rows name shard paths relative to one store; a workspace that opened the catalog with
    another folder would find no file (every query: "a shard is unreadable"). ``synthdb init`` records the
    store of the first workspace here and makes every later workspace of the catalog use (and prove, by
    the marker id of :mod:`synthdb.store.layout`) the same one; opening a workspace checks it. One row at
    most: ``slot`` is always 1.
    """

    __tablename__ = "store"

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    store_id: Mapped[str] = mapped_column(String(32), unique=True)
    location: Mapped[str] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


TABLES = [t.name for t in Base.metadata.sorted_tables]
