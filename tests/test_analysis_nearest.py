"""FAISS indexes and nearest-identity checks: exact equals brute force, IVF recall, planted leaks found."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from synthdb.analysis.index import Searcher, build_index, calibrate, load_index
from synthdb.analysis.nearest import check_nearest
from synthdb.analysis.query import query
from synthdb.analysis.vectors import normalized
from synthdb.catalog.datasets import create_dataset
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.commit import NewSamples, ShardSpec, commit


def add_dataset(
    ctx: Context,
    name: str,
    vectors: np.ndarray,
    labels: list[str],
    roles: str = "variation",
    model: str = "m",
) -> int:
    ds = create_dataset(ctx.catalog, name, "synthetic", "generated")
    commit_part(ctx, ds, vectors, labels, roles, model, 0)
    return ds


def commit_part(
    ctx: Context, ds: int, vectors: np.ndarray, labels: list[str], role: str, model: str, first: int
) -> None:
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=ds,
        samples=NewSamples(
            keys=[f"k{first + i}" for i in range(len(labels))], role=role, identity_labels=labels
        ),
        shards=[ShardSpec("embedding", model, {"embedding": vectors.astype(np.float32)})],
    )


def latent_factor(n: int, dims: int, rng: np.random.Generator, rank: int = 16) -> np.ndarray:
    """Vectors with the low intrinsic dimension of face embeddings (a random rank-16 map plus noise)."""
    basis = rng.standard_normal((rank, dims))
    return rng.standard_normal((n, rank)) @ basis + 0.3 * rng.standard_normal((n, dims))


def test_exact_index_equals_brute_force(ctx: Context) -> None:
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((2000, 64))
    add_dataset(ctx, "ref", refs, [str(i // 4) for i in range(2000)])
    info = build_index(ctx, "ref", "m", "Flat", "sample", quiet=True)
    assert info.action == "built" and info.ntotal == 2000
    queries = normalized(rng.standard_normal((300, 64)).astype(np.float32))
    scores, ids = Searcher(load_index(info.path)).search(queries, 10)
    unit = normalized(refs.astype(np.float32)).astype(np.float64)
    truth = queries.astype(np.float64) @ unit.T
    order = np.argsort(-truth, axis=1)[:, :10]
    sample_ids = query(ctx, "SELECT sample_id FROM embeddings ORDER BY sample_id").column(0).to_numpy()
    assert np.array_equal(ids, sample_ids[order])
    assert np.allclose(scores, np.take_along_axis(truth, order, 1), atol=1e-5)


def test_ivf_reaches_recall_at_default_nprobe(tmp_path: Path, sqlite_ctx: Context) -> None:
    rng = np.random.default_rng(1)
    data = latent_factor(22_000, 64, rng)
    base, held_out = data[:20_000], normalized(data[20_000:].astype(np.float32))
    add_dataset(sqlite_ctx, "big", base, [str(i // 10) for i in range(20_000)])
    info = build_index(sqlite_ctx, "big", "m", "IVF256,Flat", "sample", quiet=True)
    assert info.search_param == "nprobe" and info.recall_at_1 >= 0.99 and info.search_value < 256
    index = load_index(info.path)
    _, found = Searcher(index).search(held_out, 1)
    unit = normalized(base.astype(np.float32))
    truth = np.argmax(held_out @ unit.T, axis=1) + 1  # sample ids start at 1 in a fresh catalog
    assert np.mean(found[:, 0] == truth) >= 0.99
    name, value, recall = calibrate(index, unit)
    assert (name, value) == ("nprobe", info.search_value) and recall >= 0.99
    with pytest.raises(SynthdbError, match="needs at least 4096 vectors"):
        build_index(sqlite_ctx, "big", "m", "IVF4096,Flat", "identity", quiet=True)
    with pytest.raises(SynthdbError, match="FAISS cannot build 'Nonsense'"):
        build_index(sqlite_ctx, "big", "m", "Nonsense", quiet=True)


@pytest.fixture
def planted(ctx: Context) -> tuple[Context, list[str]]:
    """REF: 300 identities x 3 samples. QUERY: 60 new identities and 10 REF identities copied with noise."""
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((300, 128))
    ref = np.repeat(centres, 3, axis=0) + 0.45 * rng.standard_normal((900, 128))
    add_dataset(ctx, "ref", ref, [f"r{i // 3}" for i in range(900)])
    copied = rng.choice(300, 10, replace=False)
    fresh = rng.standard_normal((60, 128))
    query_centres = np.vstack([fresh, centres[copied] + 0.05 * rng.standard_normal((10, 128))])
    queries = np.repeat(query_centres, 2, axis=0) + 0.45 * rng.standard_normal((140, 128))
    labels = [f"q{i // 2}" for i in range(140)]
    add_dataset(ctx, "query", queries, labels, roles="reference")
    return ctx, [f"r{i}" for i in copied]


@pytest.mark.parametrize("by", ["identity", "sample"])
def test_planted_duplicates_are_all_found(planted: tuple[Context, list[str]], by: str) -> None:
    ctx, copied = planted
    report = check_nearest(ctx, "query", "ref", "m", k=3, threshold=0.9, by=by, quiet=True)
    leaks = report.matches(leaks_only=True)
    assert {m.ref_identity for m in leaks} == set(copied)
    assert report.leaking_queries == 10 and all(m.rank == 1 for m in leaks)
    assert {m.query_identity for m in leaks} == {f"q{i}" for i in range(60, 70)}
    rows = query(
        ctx,
        f"SELECT query_identity, ref_identity, ref_dataset, angle_rad, leak, rank FROM nearest "
        f"WHERE run_id = {report.run_id} AND leak ORDER BY angle_rad",
    ).to_pylist()
    assert [(r["query_identity"], r["ref_identity"]) for r in rows] == [
        (m.query_identity, m.ref_identity) for m in leaks
    ]
    assert all(r["ref_dataset"] == "ref" for r in rows)
    assert (
        query(ctx, f"SELECT count(*) FROM nearest WHERE run_id = {report.run_id}").column(0)[0].as_py() == 210
    )
    fresh_angles = report.angles_rad[:60, 0]
    assert fresh_angles.min() > 0.9 > max(m.angle_rad for m in leaks)


def test_same_dataset_finds_duplicates_not_itself(planted: tuple[Context, list[str]]) -> None:
    ctx, _ = planted
    report = check_nearest(ctx, "query", "query", "m", k=2, threshold=0.9, by="sample", quiet=True)
    assert np.all(report.ref_identity_ids != report.query_identity_ids[:, None])
    assert report.leaking_queries == 0  # the copies are of different REF identities
    ds = create_dataset(ctx.catalog, "twins", "synthetic", "generated")
    rng = np.random.default_rng(3)
    base = rng.standard_normal((50, 128))
    twins = np.vstack([base, base[:5] + 0.02 * rng.standard_normal((5, 128))])
    commit_part(ctx, ds, twins, [f"t{i}" for i in range(55)], "reference", "m", 0)
    dup = check_nearest(ctx, "twins", "twins", "m", k=1, threshold=0.5, by="identity", quiet=True)
    pairs = {frozenset((m.query_identity, m.ref_identity)) for m in dup.matches(leaks_only=True)}
    assert pairs == {frozenset((f"t{i}", f"t{50 + i}")) for i in range(5)}


def test_stale_indexes_are_extended_or_rebuilt(ctx: Context) -> None:
    rng = np.random.default_rng(4)
    ds = add_dataset(ctx, "grow", rng.standard_normal((100, 32)), [str(i // 2) for i in range(100)])
    first = build_index(ctx, "grow", "m", "Flat", "sample", quiet=True)
    assert build_index(ctx, "grow", "m", "Flat", "sample", quiet=True).action == "fresh"
    per_identity = build_index(ctx, "grow", "m", "Flat", "identity", quiet=True)
    assert per_identity.ntotal == 50
    commit_part(
        ctx, ds, rng.standard_normal((40, 32)), [str(i // 2) for i in range(40)], "variation", "m", 100
    )
    extended = build_index(ctx, "grow", "m", "Flat", "sample", quiet=True)
    assert (extended.action, extended.ntotal, extended.id) == ("extended", 140, first.id)
    assert not first.path.exists() and extended.path.exists()
    rebuilt = build_index(ctx, "grow", "m", "Flat", "identity", quiet=True)
    assert (rebuilt.action, rebuilt.ntotal) == ("rebuilt", 50)  # moved centroids cannot be appended
    rows = query(ctx, "SELECT per, ntotal, shard_ids FROM catalog.vector_index ORDER BY id").to_pylist()
    assert [(r["per"], r["ntotal"]) for r in rows] == [("sample", 140), ("identity", 50)]


def test_cli_check_nearest_and_index_build(planted: tuple[Context, list[str]]) -> None:
    import synthdb.cli.analysis_cmds  # noqa: F401 - registers the commands
    from synthdb.cli.app import cli

    ctx, copied = planted
    runner = CliRunner()
    ws = str(ctx.ws.root)
    built = runner.invoke(cli, ["-w", ws, "-q", "index", "build", "ref", "--model", "m", "--per", "identity"])
    assert built.exit_code == 0 and "300 (identity)" in built.output, built.output
    out = runner.invoke(
        cli, ["-w", ws, "check", "nearest", "query", "--against", "ref", "--model", "m", "--threshold", "0.9"]
    )
    assert out.exit_code == 0, out.output
    assert "10 of 70 identities of query have a match in ref below 0.9 rad" in out.output
    assert all(label in out.output for label in copied)
    bad = runner.invoke(cli, ["-w", ws, "check", "nearest", "query", "--against", "ref", "--model", "nope"])
    assert bad.exit_code == 1 and "no committed embedding shards of 'nope'" in bad.output
