"""FAISS indexes and nearest-identity checks: exact equals brute force, IVF recall, planted leaks found."""

from pathlib import Path

import numpy as np
import pytest

from synthdb.analysis.index import Searcher, build_index, calibrate, load_index
from synthdb.analysis.nearest import check_nearest
from synthdb.analysis.query import query
from synthdb.analysis.vectors import normalized
from synthdb.catalog.datasets import create_dataset, get_dataset
from synthdb.catalog.runs import get_run
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.commit import NewSamples, ShardSpec, commit
from tests.conftest import CliRun


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


def test_cli_check_nearest_and_index_build(planted: tuple[Context, list[str]], synthdb_cli: CliRun) -> None:

    ctx, copied = planted
    ws = str(ctx.ws.root)
    built = synthdb_cli("-q", "index", "build", "ref", "--model", "m", "--by", "identity", ws=ws)
    assert built.exit_code == 0 and "300 (identity)" in built.output, built.output
    out = synthdb_cli(
        "check", "nearest", "query", "--against", "ref", "--model", "m", "--threshold", "0.9", ws=ws
    )
    assert out.exit_code == 0, out.output
    assert "10 of 70 identities of query have a match in ref below 0.9 rad" in out.output
    assert all(label in out.output for label in copied)
    bad = synthdb_cli("check", "nearest", "query", "--against", "ref", "--model", "nope", ws=ws)
    assert bad.exit_code == 1 and "no committed embedding shards of 'nope'" in bad.output


def test_closest_per_identity_is_the_closest_pair_of_samples(ctx: Context) -> None:
    """--by all against brute force: per QUERY identity, its k REF identities with the closest sample pair."""
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((240, 24))
    add_dataset(ctx, "ref", ref, [f"r{i % 40}" for i in range(240)])
    queries = np.vstack(
        [rng.standard_normal((60, 24)), ref[[3, 77, 150]] + 0.01 * rng.standard_normal((3, 24))]
    )
    add_dataset(ctx, "query", queries, [f"q{i % 21}" for i in range(63)])
    report = check_nearest(ctx, "query", "ref", "m", k=4, threshold=0.3, by="all", quiet=True)
    unit_q, unit_r = normalized(queries.astype(np.float32)), normalized(ref.astype(np.float32))
    angles = np.arccos(np.clip(unit_q.astype(np.float64) @ unit_r.T.astype(np.float64), -1, 1))
    q_label, r_label = np.arange(63) % 21, np.arange(240) % 40
    listed = query(ctx, "SELECT sample_id FROM embeddings WHERE dataset = 'query' ORDER BY sample_id")
    query_ids = listed.column(0).to_numpy()
    for row, identity in enumerate(report.query_identity_ids):
        label = int(report.labels[int(identity)][1:])
        per_ref = np.array([angles[q_label == label][:, r_label == r].min() for r in range(40)])
        best = np.argsort(per_ref, kind="stable")[:4]
        found = [int(report.labels[int(i)][1:]) for i in report.ref_identity_ids[row]]
        assert found == best.tolist()
        assert np.allclose(report.angles_rad[row], per_ref[best], atol=1e-5)
        pairs = angles[np.ix_(np.flatnonzero(q_label == label), np.flatnonzero(r_label == best[0]))]
        q_row, _ = np.unravel_index(np.argmin(pairs), pairs.shape)
        assert report.query_sample_ids[row, 0] == query_ids[np.flatnonzero(q_label == label)[q_row]]
    leaks = report.matches(leaks_only=True)  # the three copies, each filed under another identity
    assert sorted((m.query_identity, m.ref_identity) for m in leaks) == [
        ("q18", "r3"),
        ("q19", "r37"),
        ("q20", "r30"),
    ]


def _faces_copy(faces: Path, root: Path, files: dict[str, str]) -> None:
    """``root/<identity>/<name>`` copies of test photos: ``files`` maps ``identity/name`` to a photo."""
    import shutil

    for target, photo in files.items():
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(faces / photo, root / target)


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Context:
    """Real photos embedded with dlib-resnet: ``faces`` (genuine people) and ``probe`` (other people), where
    probe's jeff holds, besides his own photo, a byte-identical copy of an obama photo of ``faces`` (the
    reported case: not jeff's first sample, so ``--by sample`` never compares it), angelina a re-encoded,
    smaller copy of an elon photo (a near duplicate), and both datasets the same face-less photo."""
    from PIL import Image

    from synthdb.admin import init_workspace
    from synthdb.embed_dataset import embed_dataset
    from synthdb.sources.registry import import_named
    from tests.conftest import FACES

    tmp = tmp_path_factory.mktemp("copies")
    _faces_copy(
        FACES,
        tmp / "faces",
        {
            "obama/obama_01.jpg": "obama_01.jpg",
            "obama/obama_02.jpg": "obama_02.jpg",
            "obama/obama_98.jpg": "obama_01.jpg",  # a repeated photo of one identity
            "biden/biden_01.jpg": "biden_01.jpg",
            "biden/biden_02.jpg": "biden_02.jpg",
            "elon/elon_01.jpg": "elon_01.jpg",
            "nobody/noface_01.jpg": "noface_01.jpg",
        },
    )
    _faces_copy(
        FACES,
        tmp / "probe",
        {
            "jeff/jeff_01.jpg": "jeff_01.jpg",
            "jeff/jeff_99.jpg": "obama_02.jpg",
            "angelina/angelina_01.jpg": "angelina_01.jpg",
            "scarlett/scarlett_01.jpg": "scarlett_01.jpg",
            "scarlett/noface_77.jpg": "noface_01.jpg",
        },
    )
    with Image.open(FACES / "elon_01.jpg") as elon:
        elon.convert("RGB").reduce(2).save(tmp / "probe" / "angelina" / "angelina_98.png")
    ctx = init_workspace(tmp / "ws", models_dir=str(tmp / "models"))
    for name in ("faces", "probe"):
        import_named(ctx, "imagefolder", tmp / name, name=name)
        embed_dataset(ctx, name, "dlib-resnet", "dlib", unit_size=64, workers=0, quiet=True)
    yield ctx
    ctx.close()


def test_by_all_finds_the_copy_that_by_sample_misses(copies: Context) -> None:
    by_sample = check_nearest(copies, "probe", "faces", by="sample", quiet=True)
    assert by_sample.model == "dlib-resnet" and by_sample.leaking_queries == 0
    report = check_nearest(copies, "probe", "faces", k=2, by="all", quiet=True)
    keys = report.sample_keys
    leaks = {(m.query_identity, m.ref_identity): m for m in report.matches(leaks_only=True)}
    assert set(leaks) == {("jeff", "obama"), ("angelina", "elon")}
    copy = leaks[("jeff", "obama")]
    assert (keys[copy.query_sample_id], keys[copy.ref_sample_id]) == (
        "jeff/jeff_99.jpg",
        "obama/obama_02.jpg",
    )
    assert copy.angle_rad < 1e-3  # the same pixels, the same embedding
    near = leaks[("angelina", "elon")]  # half the size, PNG: another file, the same face
    assert keys[near.query_sample_id] == "angelina/angelina_98.png" and 1e-3 < near.angle_rad < 0.2
    exact = [(d.query_key, d.ref_key, d.same_identity) for d in report.exact]
    assert exact == [
        ("jeff/jeff_99.jpg", "obama/obama_02.jpg", False),
        ("scarlett/noface_77.jpg", "nobody/noface_01.jpg", False),
    ]
    assert report.unreadable == 0
    assert get_run(copies.catalog, report.run_id).summary["exact_duplicates"] == 2


def test_by_all_within_one_dataset_names_repeated_photos(copies: Context) -> None:
    report = check_nearest(copies, "faces", "faces", k=1, by="all", quiet=True)
    assert [(d.query_key, d.ref_key, d.same_identity) for d in report.exact] == [
        ("obama/obama_01.jpg", "obama/obama_98.jpg", True)
    ]
    assert np.all(report.ref_identity_ids != report.query_identity_ids[:, None])  # never its own match


def test_hashing_never_follows_a_link_out_or_blocks_on_a_fifo(copies: Context, tmp_path: Path) -> None:
    """An image swapped for a symlink to a file outside the root (with the bytes of an obama photo) or for
    a FIFO is counted as unreadable: not read, not reported, and nothing waits on the FIFO."""
    import os

    root = Path(get_dataset(copies.catalog, "probe").root)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((root.parent / "faces" / "obama" / "obama_01.jpg").read_bytes())
    scarlett, angelina = root / "scarlett" / "scarlett_01.jpg", root / "angelina" / "angelina_01.jpg"
    saved = {p: p.read_bytes() for p in (scarlett, angelina)}
    try:
        scarlett.unlink()
        scarlett.symlink_to(outside)
        angelina.unlink()
        os.mkfifo(angelina)
        report = check_nearest(copies, "probe", "faces", k=1, by="all", quiet=True)
    finally:
        for path, data in saved.items():
            path.unlink()
            path.write_bytes(data)
    assert report.unreadable == 2
    assert "scarlett/scarlett_01.jpg" not in {d.query_key for d in report.exact}
    assert len(report.exact) == 2


def test_cli_by_all_lists_near_and_exact_duplicates(copies: Context, synthdb_cli: CliRun) -> None:

    args = ["-w", str(copies.ws.root), "-q", "check", "nearest", "probe", "--against", "faces", "--by", "all"]
    out = synthdb_cli(*args)
    assert out.exit_code == 0, out.output
    assert "2 of 3 identities of probe have a match in faces below 0.4027 rad" in out.output
    assert "(jeff/jeff_99.jpg ~ obama/obama_02.jpg)" in out.output
    assert "2 pairs of byte-identical image files" in out.output
    assert "jeff/jeff_99.jpg == obama/obama_02.jpg" in out.output
    index = synthdb_cli("-q", "index", "build", "faces", "--per", "identity", ws=str(copies.ws.root))
    assert index.exit_code == 0 and "(identity)" in index.output, (
        index.output
    )  # --per: the old spelling of --by
