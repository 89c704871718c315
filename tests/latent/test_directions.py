"""Covariate directions: the SVM analysis recovers directions planted in latents of Multi-PIE keys, uses
only each protocol's train group, splits statistics by sign, and direction sets round-trip through the
catalog (SQLite and PostgreSQL) exactly, visible to ``synthdb query``."""

from __future__ import annotations

import numpy as np
import pytest

from synthdb.analysis.query import query
from synthdb.catalog.datasets import create_dataset
from synthdb.catalog.runs import get_run
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.latent import svm_directions
from synthdb.latent.directions import COVARIATES, Direction, DirectionSet, SideStats, list_sets
from synthdb.sources import multipie
from synthdb.store.commit import NewSamples, ShardSpec, commit
from tests.conftest import CliRun

TRAIN = sorted(s for s, g in multipie.SUBJECT_GROUPS.items() if g == "train")
DEV = sorted(s for s, g in multipie.SUBJECT_GROUPS.items() if g == "dev")


def multipie_key(subject: int, session: int, recording: int, camera: str, shot: int) -> str:
    """The key the Multi-PIE importer gives this image."""
    cam = camera.replace("_", "")
    return (
        f"session{session:02d}_multiview_{subject:03d}_{recording:02d}_{camera}_"
        f"{subject:03d}_{session:02d}_{recording:02d}_{cam}_{shot:02d}"
    )


def multipie_keys(subjects: list[int]) -> list[str]:
    """Every image of these subjects that U, E_lit or P_center_lit select, plus the cameras of the pose
    classes outside the centre (never selected, so never used)."""
    keys = set()
    for s in subjects:
        for (session, recording), expression in multipie.EXPRESSIONS.items():
            keys.add(multipie_key(s, session, recording, "05_1", 7))
            if expression == "neutral":
                keys |= {multipie_key(s, session, recording, "05_1", shot) for shot in range(19)}
                keys |= {
                    multipie_key(s, session, recording, c, 7) for c in (*multipie.CENTER_CAMERAS, "11_0")
                }
    return sorted(keys)


def planted_latents(keys: list[str], normals: np.ndarray, offset: float, seed: int = 0) -> np.ndarray:
    """Random w (std 0.5) plus ``-offset`` along a covariate's normal for its first class and ``+offset``
    for its second, for every covariate whose train classes the key falls in. Keys of other groups get
    the opposite offsets: using them would spoil the fit."""
    rng = np.random.default_rng(seed)
    w = 0.5 * rng.standard_normal((len(keys), normals.shape[1]))
    for i, key in enumerate(keys):
        entry = svm_directions.parse_key(key)
        if entry is None:
            continue
        train = multipie.SUBJECT_GROUPS.get(entry.attributes["subject"]) == "train"
        for k, covariate in enumerate(COVARIATES):
            y = _class(covariate, entry)
            if y is not None:
                w[i] += (2 * y - 1) * offset * normals[k] * (1 if train else -1)
    return w.astype(np.float32)


def _class(covariate: str, entry: multipie.Entry) -> int | None:
    """The covariate's class of an image by its attributes alone (any group), for planting."""
    a = entry.attributes
    if covariate == "pose":
        if a["shot"] != 7 or (a["session"], a["recording"]) not in multipie.NEUTRAL:
            return None
        return (
            0
            if a["camera"] in svm_directions.POSE_CLASSES[0]
            else 1
            if a["camera"] in svm_directions.POSE_CLASSES[1]
            else None
        )
    if a["camera"] != "05_1":
        return None
    if covariate == "illumination":
        if (a["session"], a["recording"]) not in multipie.NEUTRAL:
            return None
        shots = svm_directions.ILLUMINATION_CLASSES
        return 0 if a["shot"] in shots[0] else 1 if a["shot"] in shots[1] else None
    if a["shot"] != 7:
        return None
    return {"neutral": 0, covariate: 1}.get(a["expression"])


def random_normals(count: int, dim: int = 512, seed: int = 3) -> np.ndarray:
    n = np.random.default_rng(seed).standard_normal((count, dim))
    return (n / np.linalg.norm(n, axis=1, keepdims=True)).astype(np.float32)


def planted_set(name: str, generator: str = "stylegan2-tiny", dim: int = 512, seed: int = 3) -> DirectionSet:
    """A direction set with random unit normals and chosen side means, as analysis would store it."""
    normals = random_normals(len(COVARIATES), dim, seed)
    directions = []
    for k, covariate in enumerate(COVARIATES):
        neg, pos = -2.0 - 0.5 * k, 1.5 + 0.25 * k
        directions.append(
            Direction(
                covariate,
                normals[k],
                svm_directions.class_names(covariate),
                (10, 10),
                1.0,
                True,
                SideStats(10, 3 * neg, 0.5 * neg, neg, 0.3),
                SideStats(10, 0.5 * pos, 3 * pos, pos, 0.3),
            )
        )
    return DirectionSet(name, generator, "all", directions)


def test_analysis_recovers_planted_directions_from_train_samples_only() -> None:
    keys = multipie_keys(TRAIN[:30] + DEV[:10]) + ["ffhq_00001", "session01_multiview_bad"]
    normals = random_normals(len(COVARIATES))
    w = planted_latents(keys, normals, offset=15.0)
    found = svm_directions.analyze(w, keys, "all", seed=0)
    assert [d.name for d in found] == list(COVARIATES)
    for k, d in enumerate(found):
        assert float(d.normal @ normals[k]) >= 0.95, d.name  # the planted direction, pointing to class 1
        assert abs(float(np.linalg.norm(d.normal)) - 1) < 1e-6
        assert d.converged and d.accuracy == 1.0
    counts = {d.name: d.counts for d in found}
    assert counts["pose"] == (30 * 5 * 3, 30 * 5 * 3)  # 3 centre cameras per side, 5 neutral recordings
    assert counts["illumination"] == (30 * 5 * 3, 30 * 5 * 3)  # shots 1-3 vs 11-13
    assert counts["smile"] == (30 * 5, 30 * 2) and counts["scream"] == (30 * 5, 30)
    # statistics: projections of the covariate's training latents, split by sign
    pose = found[0]
    rows = [
        i
        for i, key in enumerate(keys)
        if (e := svm_directions.parse_key(key)) and svm_directions.label("pose", e) is not None
    ]
    p = w[rows].astype(np.float64) @ pose.normal.astype(np.float64)
    assert (pose.neg, pose.pos) == (SideStats.of(p[p < 0]), SideStats.of(p[p > 0]))
    assert pose.neg.count + pose.pos.count == len(rows) and pose.pos.min > 0 > pose.neg.max
    assert abs(pose.pos.mean - 15.0) < 1.5 and abs(pose.neg.mean + 15.0) < 1.5

    only_u = svm_directions.analyze(w, keys, "U")
    assert [d.name for d in only_u] == ["illumination"]
    assert np.array_equal(only_u[0].normal, found[1].normal)  # seeded: the same fit
    with pytest.raises(SynthdbError, match="unknown protocol 'M'"):
        svm_directions.analyze(w, keys, "M")
    with pytest.raises(SynthdbError, match="0 left and .* right"):
        svm_directions.analyze(w[:0], [], "P_center_lit")


def projections_dataset(ctx: Context, name: str, keys: list[str], w: np.ndarray) -> int:
    """A projections dataset as ``synthdb latent project`` writes it."""
    dataset = create_dataset(ctx.catalog, name, "synthetic", "projection")
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=dataset,
        shards=[ShardSpec("latent", "stylegan2-tiny", {"w": w})],
        samples=NewSamples(
            keys=keys,
            role="projection",
            identity_labels=[k.split("_")[2] for k in keys],
            labels=["projection"] * len(keys),
            attributes=[{"source_sample_id": i + 1, "source_key": k} for i, k in enumerate(keys)],
        ),
    )
    return dataset


def test_direction_sets_round_trip_through_the_catalog(ctx: Context) -> None:
    keys = multipie_keys(TRAIN[:8])
    w = planted_latents(keys, random_normals(len(COVARIATES)), offset=15.0)
    dataset = projections_dataset(ctx, "mp-proj", keys, w)
    made = svm_directions.analyze_projections(ctx, "mp-proj", "mp-dirs", "all", seed=1)
    assert (made.generator, made.protocol, made.dataset_id, made.w_dim) == (
        "stylegan2-tiny",
        "all",
        dataset,
        512,
    )
    run = get_run(ctx.catalog, made.run_id)
    assert (run.kind, run.status, run.seed) == ("latent-analysis", "succeeded", 1)
    assert run.summary["direction_set"] == "mp-dirs" and run.summary["smile"]["counts"] == [40, 16]

    loaded = DirectionSet.load(ctx.catalog, "mp-dirs")
    assert (loaded.generator, loaded.protocol, loaded.names) == ("stylegan2-tiny", "all", made.names)
    assert (loaded.dataset_id, loaded.run_id) == (dataset, made.run_id)
    assert np.array_equal(loaded.normals, made.normals)  # exact: float32 -> JSON -> float32
    assert [(d.neg, d.pos, d.classes, d.counts) for d in loaded.directions] == [
        (d.neg, d.pos, d.classes, d.counts) for d in made.directions
    ]
    direct = svm_directions.analyze(w, keys, "all", seed=1)
    assert np.array_equal(loaded.normals, np.stack([d.normal for d in direct]))

    svm_directions.analyze_projections(ctx, "mp-proj", "mp-pose", "P_center_lit")
    assert [(s.name, s.names) for s in list_sets(ctx.catalog)] == [
        ("mp-dirs", list(COVARIATES)),
        ("mp-pose", ["pose"]),
    ]
    rows = query(ctx, "SELECT name, generator, protocol, w_dim FROM catalog.direction_set ORDER BY name")
    assert rows.to_pylist() == [
        {"name": "mp-dirs", "generator": "stylegan2-tiny", "protocol": "all", "w_dim": 512},
        {"name": "mp-pose", "generator": "stylegan2-tiny", "protocol": "P_center_lit", "w_dim": 512},
    ]
    with pytest.raises(SynthdbError, match="'mp-dirs' exists already"):
        svm_directions.analyze_projections(ctx, "mp-proj", "mp-dirs")
    with pytest.raises(SynthdbError, match=r"no direction set named 'nope' .*known: mp-dirs, mp-pose"):
        DirectionSet.load(ctx.catalog, "nope")


def test_bad_projection_datasets_are_refused(sqlite_ctx: Context) -> None:
    ctx = sqlite_ctx
    dataset = create_dataset(ctx.catalog, "plain", "synthetic", "generated")
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=dataset,
        shards=[ShardSpec("latent", "stylegan2-tiny", {"w": np.zeros((2, 512), np.float32)})],
        samples=NewSamples(keys=["a", "b"], role="reference", identity_labels=["1", "2"]),
    )
    with pytest.raises(SynthdbError, match="no samples with a source_key"):
        svm_directions.analyze_projections(ctx, "plain", "x")
    with pytest.raises(SynthdbError, match="no dataset named 'missing'"):
        svm_directions.analyze_projections(ctx, "missing", "x")
    with pytest.raises(SynthdbError, match="unknown covariate directions"):
        DirectionSet(
            "x",
            "g",
            "all",
            [
                Direction(
                    "age",
                    np.ones(4, np.float32),
                    ("a", "b"),
                    (1, 1),
                    1,
                    True,
                    *[SideStats(1, 0, 0, 0, 0)] * 2,
                )
            ],
        )


def test_analyze_and_variations_options_through_the_cli(sqlite_ctx: Context, synthdb_cli: CliRun) -> None:
    ws = sqlite_ctx.ws.root
    keys = multipie_keys(TRAIN[:4])
    projections_dataset(sqlite_ctx, "mp-proj", keys, planted_latents(keys, random_normals(7), offset=15.0))
    out = synthdb_cli("latent", "analyze", "mp-proj", "--protocol", "U", "-q", ws=ws, code=0).output
    assert "direction set mp-proj-U (stylegan2-tiny, protocol U):" in out
    assert "illumination  left 60 vs right 60, train accuracy 1.000" in out
    listed = synthdb_cli("latent", "list", ws=ws, code=0).output
    assert "mp-proj-U  stylegan2-tiny, protocol U: illumination" in listed
    assert DirectionSet.load(sqlite_ctx.catalog, "mp-proj-U").names == ["illumination"]
    failed = synthdb_cli(
        "generate", "variations", "--name", "v", "--references", "r", "--algorithm", "covariates", ws=str(ws)
    )
    assert failed.exit_code == 1
    assert failed.output.strip().startswith(
        "error: covariates needs covariate directions: pass --directions NAME"
    )
