"""Sample and identity lookups: chunked IN lists beyond one chunk, listings, enum-checked writes."""

from __future__ import annotations

import numpy as np
import pytest

from synthdb.catalog import bulk, lookup, samples
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.schema import DatasetKind, RunStatus, SampleRole, member
from synthdb.context import Context
from synthdb.errors import SynthdbError

N = lookup.CHUNK * 2 + 7  # three chunks, the last one short


def _many(ctx: Context) -> tuple[int, np.ndarray, np.ndarray]:
    """A dataset of N samples, one identity each; (dataset id, sample ids, identity ids)."""
    ds = create_dataset(ctx.catalog, "many", DatasetKind.SYNTHETIC, "generated")
    with ctx.catalog.begin() as conn:
        identities = bulk.identity_ids(conn, ds, [f"id{i}" for i in range(N)])
        ids = bulk.allocate_ids(conn, samples._sample, N)
        roles = SampleRole.REFERENCE
        bulk.insert_samples(
            conn,
            ds,
            ids,
            [f"k{i}" for i in range(N)],
            identities,
            roles,
            attributes=[{"n": i} for i in range(N)],
        )
    return ds, ids, identities


def test_lookups_span_every_chunk(ctx: Context) -> None:
    ds, ids, identities = _many(ctx)
    labels = samples.identity_labels(ctx.catalog, [*identities.tolist(), samples.NO_IDENTITY, 10**9])
    assert len(labels) == N and labels[int(identities[-1])] == f"id{N - 1}"
    assert set(samples.sample_roles(ctx.catalog, ids).values()) == {"reference"}
    attributes = samples.sample_attributes(ctx.catalog, ids[::-1])
    assert attributes[int(ids[lookup.CHUNK])] == {"n": lookup.CHUNK}
    wanted = [f"k{i}" for i in range(0, N, 3)] + ["not-a-key"]
    assert samples.sample_keys(ctx.catalog, ds, among=wanted) == set(wanted[:-1])
    assert len(samples.sample_keys(ctx.catalog, ds)) == N
    columns = samples.sample_columns(ctx.catalog, ds)
    assert columns.id.tolist() == sorted(ids.tolist()) and columns.identity_id.dtype == np.int64


def test_listing_streams_every_sample_with_its_identity(ctx: Context) -> None:
    ds, ids, _ = _many(ctx)
    listed = list(samples.listing(ctx.catalog, ds))
    assert len(listed) == N and [s.id for s in listed] == sorted(ids.tolist())
    assert (listed[5].key, listed[5].identity, listed[5].role, listed[5].attributes) == (
        "k5",
        "id5",
        "reference",
        {"n": 5},
    )
    assert list(samples.listing(ctx.catalog, ds, in_groups=[])) == []


def test_enumerated_values_are_checked_in_one_line(ctx: Context) -> None:
    assert member(RunStatus, "failed", "run status") is RunStatus.FAILED
    with pytest.raises(SynthdbError, match=r"^dataset kind 'fake' is not one of genuine, synthetic$"):
        create_dataset(ctx.catalog, "x", "fake", "generated")
    ds = create_dataset(ctx.catalog, "x", "genuine", "generated")
    with (
        pytest.raises(
            SynthdbError, match=r"^sample role 'boss' is not one of genuine, reference, variation, "
        ),
        ctx.catalog.begin() as conn,
    ):
        bulk.insert_samples(conn, ds, np.array([1]), ["k"], None, "boss")
