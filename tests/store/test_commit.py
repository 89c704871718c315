"""The shard commit protocol: round trip, refusals, and SIGKILL at the two dangerous moments."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sqlalchemy as sa

from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.schema import Identity, Sample, Shard
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.files import file_digest
from synthdb.store import fsck, parquet
from synthdb.store.commit import NewSamples, ShardSpec, commit


def _count(ctx: Context, table) -> int:  # noqa: ANN001
    with ctx.catalog.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def _store_files(ctx: Context) -> list[str]:
    return sorted(str(p.relative_to(ctx.store.root)) for p in ctx.store.root.rglob("*") if p.is_file())


def _new(n: int, prefix: str = "s") -> NewSamples:
    return NewSamples(
        keys=[f"{prefix}{i}" for i in range(n)],
        role="reference",
        identity_labels=[f"{i // 2:05d}" for i in range(n)],
    )


def test_commit_round_trip(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    rng = np.random.default_rng(0)
    emb, w = rng.standard_normal((10, 128)).astype(np.float32), rng.standard_normal((10, 14, 512))
    done = commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        unit="u0",
        samples=_new(10),
        shards=[
            ShardSpec("embedding", "dlib-resnet", {"embedding": emb}),
            ShardSpec("latent", "stylegan2-tiny", {"w_plus": w}),
        ],
    )
    assert len(done.shard_ids) == 2 and _count(ctx, Sample) == 10 and _count(ctx, Identity) == 5
    with ctx.catalog.session() as session:
        shards = session.scalars(sa.select(Shard).order_by(Shard.id)).all()
        samples = session.scalars(sa.select(Sample).order_by(Sample.id)).all()
    assert [s.key for s in samples] == [f"s{i}" for i in range(10)]
    assert shards[0].columns == {"embedding": [128]} and shards[1].columns == {"w_plus": [14, 512]}
    assert shards[0].state == "committed" and shards[0].unit == "u0" and shards[0].rows == 10
    sample_ids, identity_ids, vectors = parquet.read_vectors(ctx.store.abspath(shards[0].path), "embedding")
    assert sample_ids.tolist() == done.sample_ids.tolist() == [s.id for s in samples]
    assert identity_ids.tolist() == [s.identity_id for s in samples]
    np.testing.assert_array_equal(vectors, emb)
    _, _, wplus = parquet.read_vectors(ctx.store.abspath(shards[1].path), "w_plus")
    np.testing.assert_allclose(wplus.reshape(10, 14, 512), w.astype(np.float32))
    assert file_digest(ctx.store.abspath(shards[0].path)) == (shards[0].bytes, shards[0].sha256)
    assert fsck.fsck(ctx.catalog, ctx.store).clean


def test_vectors_for_existing_samples(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    first = commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=_new(4),
        shards=[ShardSpec("latent", "g", {"w": np.zeros((4, 512))})],
    )
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        sample_ids=first.sample_ids,
        shards=[ShardSpec("embedding", "m", {"embedding": np.ones((4, 128))})],
    )
    assert _count(ctx, Sample) == 4 and _count(ctx, Shard) == 2


def test_wrong_vector_sizes_are_refused_before_any_write(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=_new(2),
        shards=[ShardSpec("embedding", "m", {"embedding": np.ones((2, 128))})],
    )
    before = _store_files(ctx)
    with pytest.raises(SynthdbError, match=r"per-row shape \(512,\), but .* have \(128,\)"):
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=ds,
            samples=_new(2, "t"),
            shards=[ShardSpec("embedding", "m", {"embedding": np.ones((2, 512))})],
        )
    with pytest.raises(SynthdbError, match=r"shape \(3, 128\), expected \(2, ...\)"):
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=ds,
            samples=_new(2, "u"),
            shards=[ShardSpec("embedding", "m", {"embedding": np.ones((3, 128))})],
        )
    assert _store_files(ctx) == before and _count(ctx, Sample) == 2


def test_failed_transaction_leaves_no_files(ctx: Context) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=_new(2),
        shards=[ShardSpec("embedding", "m", {"embedding": np.ones((2, 8))})],
    )
    before = _store_files(ctx)
    with pytest.raises(sa.exc.IntegrityError):  # the same keys again: the insert fails mid-commit
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=ds,
            samples=_new(2),
            shards=[ShardSpec("embedding", "m", {"embedding": np.ones((2, 8))})],
        )
    assert _store_files(ctx) == before and _count(ctx, Shard) == 1


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from synthdb.context import Context
    from synthdb.store.commit import NewSamples, ShardSpec, commit

    when = sys.argv[2]
    real_replace = os.replace

    def replace_then_die(src, dst):
        if when == "after_rename":
            real_replace(src, dst)
        os.kill(os.getpid(), signal.SIGKILL)

    ctx = Context.open(sys.argv[1])
    os.replace = replace_then_die
    commit(ctx.catalog, ctx.store, dataset_id=int(sys.argv[3]),
           samples=NewSamples(keys=[f"killed{i}" for i in range(50)], role="reference",
                              identity_labels=["victim"] * 50),
           shards=[ShardSpec("embedding", "m", {"embedding": np.ones((50, 64))})])
    print("not killed")
    """
)


@pytest.mark.parametrize("when", ["before_rename", "after_rename"])
def test_sigkill_during_commit_leaves_catalog_consistent(ctx: Context, when: str) -> None:
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=_new(4),
        shards=[ShardSpec("embedding", "m", {"embedding": np.ones((4, 64))})],
    )
    env = {**os.environ, "SYNTHDB_CATALOG_URL": ctx.ws.catalog_url}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(ctx.ws.root), when, str(ds)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _count(ctx, Sample) == 4 and _count(ctx, Shard) == 1 and _count(ctx, Identity) == 2
    report = fsck.fsck(ctx.catalog, ctx.store)
    assert report.checked == 1 and not report.missing and not report.corrupt
    if when == "before_rename":
        assert len(report.staged) == 1 and report.orphans == []
    else:
        assert report.staged == [] and len(report.orphans) == 1
    leftover = (report.staged + report.orphans)[0]
    # a live writer may still own it
    assert fsck.gc(ctx.catalog, ctx.store, min_age=3600).kept_young == [leftover]
    assert fsck.gc(ctx.catalog, ctx.store, min_age=0).removed_files == [leftover]
    assert fsck.fsck(ctx.catalog, ctx.store).clean


def test_fsck_finds_missing_and_corrupt_shards(sqlite_ctx: Context) -> None:
    ctx = sqlite_ctx
    ds = create_dataset(ctx.catalog, "syn", "synthetic", "generated")
    for i in range(2):
        commit(
            ctx.catalog,
            ctx.store,
            dataset_id=ds,
            samples=_new(3, f"b{i}-"),
            shards=[ShardSpec("embedding", "m", {"embedding": np.ones((3, 16))})],
        )
    with ctx.catalog.engine.connect() as conn:
        paths = conn.execute(sa.select(Shard.path).order_by(Shard.id)).scalars().all()
    ctx.store.abspath(paths[0]).unlink()
    target = ctx.store.abspath(paths[1])
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content: only the sha256 notices
    target.write_bytes(bytes(data))
    report = fsck.fsck(ctx.catalog, ctx.store)
    assert report.missing == [paths[0]] and report.corrupt == [paths[1]]
    assert fsck.fsck(ctx.catalog, ctx.store, verify=False).corrupt == []
    with pytest.raises(SynthdbError, match="is missing: run `synthdb fsck`"):
        parquet.read_table(ctx.store.abspath(paths[0]))
