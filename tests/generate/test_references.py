"""Reference generation into the catalog: random, ICT, Langevin; runs, units, seeds and exact resume.

Uses the UNTRAINED stylegan2-tiny generator (its images are not faces) with the dlib embedder, so
angles between identities are small (about 0.2-0.4 rad): thresholds here are scaled to that.
"""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
import torch

from synthdb import seeds
from synthdb.analysis.vectors import load_vectors
from synthdb.angles import angle
from synthdb.catalog.runs import finish_run, get_run
from synthdb.catalog.schema import Sample, Shard
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate import units
from synthdb.generate.references import LangevinParams, ReferenceParams, generate_references
from synthdb.generate.resume import resume_run
from synthdb.store.commit import TableSpec, commit
from synthdb.store.fsck import fsck

TINY_GENERATOR = "stylegan2-tiny"  # untrained: these tests are about the machinery, not faces

SMALL = {"num_identities": 6, "ict": 0.25, "batch_size": 4, "generator": TINY_GENERATOR}
LANGEVIN = LangevinParams(iterations=4, repulsion_radius=0.5)


def vectors(ctx: Context, name: str, content: str = "embedding") -> tuple[list[str], np.ndarray]:
    """(sample keys, vectors) of a dataset in sample-id order."""
    space, column = ("dlib-resnet", "embedding") if content == "embedding" else ("stylegan2-tiny", "w")
    found = load_vectors(ctx, name, space, content, column).by_sample()
    ids, vecs = found.sample_ids, found.vectors
    table = Sample.__table__
    with ctx.catalog.engine.connect() as conn:
        keys = dict(
            conn.execute(sa.select(table.c.id, table.c.key).where(table.c.id.in_(ids.tolist()))).all()
        )
    return [keys[int(i)] for i in ids], vecs


@pytest.mark.slow
def test_random_ict_langevin_land_in_the_catalog(sqlite_ctx: Context) -> None:
    ctx = sqlite_ctx
    for algorithm in ("random", "ict", "langevin"):
        run_id = generate_references(
            ctx, ReferenceParams(name=algorithm, algorithm=algorithm, langevin=LANGEVIN, **SMALL)
        )
        run = get_run(ctx.catalog, run_id)
        assert (run.kind, run.algorithm, run.status, run.seed) == ("references", algorithm, "succeeded", 0)
        assert run.params["num_identities"] == 6 and run.summary["dataset"] == algorithm
        keys, emb = vectors(ctx, algorithm)
        wkeys, w = vectors(ctx, algorithm, "latent")
        assert keys == wkeys == [f"{i:05d}/reference" for i in range(6)]
        assert emb.shape == (6, 128) and w.shape == (6, 512)
        if algorithm == "ict":  # every accepted pair is at least ICT apart
            d = angle(torch.from_numpy(emb), torch.from_numpy(emb))
            assert bool((d[~torch.eye(6, dtype=torch.bool)] >= 0.25).all())
    stats = units.read_stats(ctx, run_id)  # langevin: one row per iteration, plus the final state
    assert [row["iteration"] for row in stats] == [0, 1, 2, 3, 4]
    first, last = stats[0], stats[-1]
    assert last["dist_min"] > first["dist_min"] and last["dist_avg"] > first["dist_avg"]
    assert last["prop_ict"] > first["prop_ict"]
    assert all(row["timestep"] > 0 and row["intf_max"] >= row["intf_min"] for row in stats[:-1])
    # the initial latents of langevin are the random run's latents (same root seed, same per-identity draws)
    _, w_random = vectors(ctx, "random", "latent")
    assert not np.array_equal(w_random, vectors(ctx, "langevin", "latent")[1])
    assert fsck(ctx.catalog, ctx.store).clean


def test_stored_latents_reproduce_stored_embeddings(sqlite_ctx: Context) -> None:
    """Constant noise: a stored latent gives back its stored embedding."""
    from synthdb.generate.pipeline import load_pipeline

    params = ReferenceParams(name="r", algorithm="random", **SMALL)
    generate_references(sqlite_ctx, params)
    _, w = vectors(sqlite_ctx, "r", "latent")
    _, emb = vectors(sqlite_ctx, "r")
    again = load_pipeline(sqlite_ctx, params).embed(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(again, emb, rtol=0, atol=1e-4)


def test_user_errors_are_one_line(sqlite_ctx: Context) -> None:
    with pytest.raises(SynthdbError, match="lower --ict"):
        generate_references(
            sqlite_ctx,
            ReferenceParams(
                generator=TINY_GENERATOR,
                name="x",
                algorithm="ict",
                num_identities=3,
                ict=3.0,
                max_candidates=2,
            ),
        )
    generate_references(
        sqlite_ctx, ReferenceParams(generator=TINY_GENERATOR, name="y", algorithm="random", num_identities=1)
    )
    with pytest.raises(SynthdbError, match="choose another --name"):
        generate_references(
            sqlite_ctx,
            ReferenceParams(generator=TINY_GENERATOR, name="y", algorithm="random", num_identities=1),
        )
    with pytest.raises(SynthdbError, match="--avoid needs"):
        generate_references(
            sqlite_ctx,
            ReferenceParams(
                generator=TINY_GENERATOR, name="z", num_identities=2, algorithm="random", avoid="y"
            ),
        )
    with pytest.raises(SynthdbError, match="no dataset named 'nope'"):
        generate_references(
            sqlite_ctx, ReferenceParams(generator=TINY_GENERATOR, name="z", num_identities=2, avoid="nope")
        )


def test_unit_seeds_are_stable_and_independent() -> None:
    assert seeds.unit_seed(0, "z", 3) == seeds.unit_seed(0, "z", 3)
    assert len({seeds.unit_seed(s, "z", i) for s in range(3) for i in range(50)}) == 150
    assert seeds.unit_seed(1, "ab") != seeds.unit_seed(1, "ba")
    a = torch.randn(4, generator=seeds.rng(7, "noise", "00001", 2))
    torch.manual_seed(123)  # global RNG state does not matter
    assert torch.equal(a, torch.randn(4, generator=seeds.rng(7, "noise", "00001", 2)))


def test_shards_from_options_slurm_and_sge(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_ARRAY_TASK_ID", "SGE_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    assert units.resolve_shard(None, None) == (0, 1)
    assert units.resolve_shard(2, 4) == (2, 4)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert units.resolve_shard(None, None) == (2, 4)
    assert units.resolve_shard(0, 2) == (0, 2)  # options win
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.setenv("SGE_TASK_ID", "5")
    monkeypatch.setenv("SGE_TASK_FIRST", "1")
    monkeypatch.setenv("SGE_TASK_LAST", "8")
    monkeypatch.setenv("SGE_TASK_STEPSIZE", "1")
    assert units.resolve_shard(None, None) == (4, 8)
    with pytest.raises(SynthdbError, match="--shard-index"):
        units.resolve_shard(4, 4)


def test_table_only_commit_is_a_shard_without_samples(ctx: Context) -> None:
    """On SQLite and PostgreSQL."""
    from synthdb.catalog.datasets import create_dataset

    sqlite_ctx = ctx
    ds = create_dataset(sqlite_ctx.catalog, "t", "synthetic", "generated")
    done = commit(
        sqlite_ctx.catalog,
        sqlite_ctx.store,
        dataset_id=ds,
        shards=[],
        unit="u",
        tables=[
            TableSpec("stats", None, {"iteration": np.arange(3), "x": np.ones(3), "v": np.zeros((3, 2))})
        ],
    )
    assert len(done.sample_ids) == 0 and len(done.shard_ids) == 1
    with sqlite_ctx.catalog.engine.connect() as conn:
        row = conn.execute(sa.select(Shard.__table__).where(Shard.__table__.c.id == done.shard_ids[0])).one()
    assert (row.content, row.rows, row.unit) == ("stats", 3, "u")
    assert fsck(sqlite_ctx.catalog, sqlite_ctx.store).clean
    with pytest.raises(SynthdbError, match="either new samples"):
        commit(sqlite_ctx.catalog, sqlite_ctx.store, dataset_id=ds, shards=[])


@pytest.mark.slow
def test_batched_repulsion_equals_the_one_identity_loop() -> None:
    """Both batched modes give the reference's per-identity forces (the gradient separates across i)."""
    from synthdb.generate.pipeline import load_pipeline
    from synthdb.generate.references import _latents, langevin_step, repulsion_potential

    params = ReferenceParams(
        generator=TINY_GENERATOR,
        name="x",
        num_identities=5,
        batch_size=2,
        langevin=LangevinParams(repulsion_radius=0.5),
    ).resolved()
    pipeline = load_pipeline(None, params)
    _, w = _latents(pipeline, 0, range(5), 0.7, "z")
    fixed = pipeline.embed(w)
    loop = []
    for i in range(5):
        wi = w[i : i + 1].clone().requires_grad_(True)
        u = repulsion_potential(pipeline.forward(wi), slice(i, i + 1), fixed, 1.0, 0.5, None, 0.0)
        loop.append(torch.autograd.grad(u, wi)[0])
    want = torch.cat(loop)
    _, whole = pipeline.coupled_gradient(
        w, lambda e, others: repulsion_potential(e, slice(0, 5), others, 1.0, 0.5, None, 0.0)
    )
    _, bounded = pipeline.gradient(
        w, lambda e, rows: repulsion_potential(e, rows, fixed, 1.0, 0.5, None, 0.0)
    )
    for got in (whole, bounded):
        assert float((got - want).norm() / want.norm()) < 1e-2  # float noise of other batch shapes
    _, w_whole, _ = langevin_step(pipeline, w, 0, params, None)
    params.langevin.whole_graph = False
    _, w_bounded, _ = langevin_step(pipeline, w, 0, params, None)
    assert float((w_whole - w_bounded).norm() / (w_whole - w).norm()) < 1e-2


@pytest.mark.slow
def test_references_and_their_resume_on_both_catalogs(ctx: Context) -> None:
    from dataclasses import replace

    params = ReferenceParams(name="pg", algorithm="langevin", num_identities=3, batch_size=3,
                             generator=TINY_GENERATOR,
                             langevin=LangevinParams(iterations=2, repulsion_radius=0.5))  # fmt: skip
    run_id = generate_references(ctx, params)
    resumed = generate_references(ctx, replace(params, name="again"))
    with ctx.catalog.begin() as conn:  # forget the final unit and the last iteration, as if killed there
        conn.execute(sa.delete(Sample.__table__).where(Sample.__table__.c.run_id == resumed))
        conn.execute(
            sa.update(Shard.__table__)
            .where(
                Shard.__table__.c.run_id == resumed, Shard.__table__.c.unit.in_(["iter/final", "iter/000001"])
            )
            .values(state="retired")
        )
    finish_run(ctx.catalog, resumed, "failed", "killed")
    resume_run(ctx, resumed)
    assert np.array_equal(vectors(ctx, "pg", "latent")[1], vectors(ctx, "again", "latent")[1])
    assert units.read_stats(ctx, run_id) == units.read_stats(ctx, resumed)


def test_stored_params_with_unknown_keys_are_named() -> None:
    from synthdb.errors import SynthdbError
    from synthdb.generate.references import ReferenceParams

    with pytest.raises(SynthdbError, match="recorded with parameters bogus that this synthdb does not know"):
        ReferenceParams.from_dict({"name": "r", "num_identities": 2, "bogus": 1})


@pytest.mark.slow
def test_a_strict_ict_pools_its_rejected_batches_into_few_units(sqlite_ctx: Context) -> None:
    """Regression: an interrupted ICT run wrote 564 tiny Parquet files for one identity (a stats-only unit
    per rejected candidate batch). Rejections now share a unit, up to ICT_UNIT_BATCHES, and every batch's
    stats row is still kept; a resume starts after the last committed batch and needs no more files."""
    from synthdb.analysis.query import query
    from synthdb.catalog.runs import list_runs
    from synthdb.generate.references import ICT_UNIT_BATCHES

    batches = ICT_UNIT_BATCHES * 2 + 12  # one accepted, then rejections until the candidate limit
    params = ReferenceParams(
        generator=TINY_GENERATOR, name="strict", algorithm="ict", num_identities=2, ict=3.0, batch_size=1,
        max_candidates=batches // 2,
    )  # fmt: skip
    with pytest.raises(SynthdbError, match="lower --ict"):
        generate_references(sqlite_ctx, params)
    run_id = list_runs(sqlite_ctx.catalog, 1)[0].id
    assert sorted(units.done_units(sqlite_ctx, run_id)) == [
        "cand/000000-000000",  # the first candidate is accepted at once
        f"cand/000001-{ICT_UNIT_BATCHES:06d}",
        f"cand/{ICT_UNIT_BATCHES + 1:06d}-{2 * ICT_UNIT_BATCHES:06d}",
        f"cand/{2 * ICT_UNIT_BATCHES + 1:06d}-{batches - 1:06d}",  # committed at the limit
    ]
    sql = f"SELECT count(*) AS n, sum(accepted) AS a, max(batch) AS b FROM stats WHERE run_id = {run_id}"
    got = query(sqlite_ctx, sql)
    assert got.to_pylist() == [{"n": batches, "a": 1, "b": batches - 1}]
    with pytest.raises(SynthdbError, match=f"only 1 of 2 identities after {batches} candidates"):
        resume_run(sqlite_ctx, run_id)
    assert len(units.done_units(sqlite_ctx, run_id)) == 4


@pytest.mark.parametrize(
    ("done", "following"),
    [(set(), 0), ({"cand/000000", "cand/000001"}, 2), ({"cand/000000-000063", "cand/000064"}, 65),
     ({"cand/000003-000009", "iter/final"}, 10)],
)  # fmt: skip
def test_ict_resumes_after_the_last_committed_batch_old_and_new_units(done: set[str], following: int) -> None:
    """Runs written before units were pooled (``cand/N``) resume as well as pooled ones (``cand/A-B``)."""
    from synthdb.generate.references import _next_ict_batch

    assert _next_ict_batch(done) == following
