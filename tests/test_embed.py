"""``synthdb embed`` on the real shared photos: detection, separation, issues, resume after SIGKILL."""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from synthdb.analysis.query import query
from synthdb.angles import angle
from synthdb.catalog.schema import SampleIssue, Shard
from synthdb.context import Context
from synthdb.embed_dataset import embed_dataset
from synthdb.sources.registry import import_named
from tests.test_sources import faces_as_imagefolder

GROUPS = {"group_01", "group_02", "group_03"}


@pytest.fixture(scope="module")
def faces_ws(tmp_path_factory: pytest.TempPathFactory) -> Context:
    from synthdb.admin import init_workspace
    from tests.conftest import FACES

    tmp = tmp_path_factory.mktemp("embed")
    faces_as_imagefolder(FACES, tmp / "faces")
    ctx = init_workspace(tmp / "ws")
    import_named(ctx, "imagefolder", tmp / "faces", name="faces")
    return ctx


def _issues(ctx: Context, run_id: int) -> dict[str, set[str]]:
    rows = query(
        ctx,
        f"""SELECT i.kind, s.key FROM catalog.sample_issue i JOIN catalog.sample s ON s.id = i.sample_id
                          WHERE i.run_id = {run_id}""",
    ).to_pylist()
    out: dict[str, set[str]] = {}
    for row in rows:
        out.setdefault(row["kind"], set()).add(row["key"].split("/")[0])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["mtcnn", "dlib"])
def test_embed_shared_faces(faces_ws: Context, detector: str) -> None:
    model = "dlib-resnet"
    report = embed_dataset(faces_ws, "faces", model, detector, unit_size=16, workers=1, quiet=True)
    if report.run_id is None:  # the other detector's run already embedded everything: start over
        with faces_ws.catalog.begin() as conn:
            conn.execute(sa.delete(SampleIssue.__table__))
            conn.execute(sa.update(Shard.__table__).values(state="retired"))
        report = embed_dataset(faces_ws, "faces", model, detector, unit_size=16, workers=1, quiet=True)
    issues = _issues(faces_ws, report.run_id)
    assert issues.get("no_face") == {"noface_01"}
    assert issues.get("multiple_faces") == GROUPS  # several faces found in every group photo
    assert set(issues) <= {"no_face", "multiple_faces"}  # every single-face photo detected
    with faces_ws.catalog.engine.connect() as conn:
        details = conn.execute(
            sa.select(SampleIssue.detail).where(
                SampleIssue.run_id == report.run_id, SampleIssue.kind == "multiple_faces"
            )
        ).scalars()
        assert all(d["faces"] >= 2 for d in details)
    assert report.embedded == 33

    rows = query(
        faces_ws,
        """SELECT e.sample_id, i.label, e.embedding, e.model FROM embeddings e
                              JOIN catalog.sample s ON s.id = e.sample_id
                              JOIN catalog.identity i ON i.id = s.identity_id
                              WHERE e.dataset = 'faces'""",
    ).to_pylist()
    vectors = {r["sample_id"]: (r["label"], np.asarray(r["embedding"], np.float32)) for r in rows}
    labelled = {sid: v for sid, v in vectors.items() if v[0] not in GROUPS and v[0] != "noface_01"}
    assert len(labelled) == 30 and {r["model"] for r in rows} == {model}
    import torch

    ids = list(labelled)
    emb = torch.from_numpy(np.stack([labelled[i][1] for i in ids]))
    angles = angle(emb, emb).numpy()
    labels = [labelled[i][0] for i in ids]
    same = [angles[a, b] for a, b in itertools.combinations(range(len(ids)), 2) if labels[a] == labels[b]]
    diff = [angles[a, b] for a, b in itertools.combinations(range(len(ids)), 2) if labels[a] != labels[b]]
    ordered = np.mean([s < d for s in same for d in diff])
    assert ordered >= 0.95, f"only {ordered:.3f} of (same, different) pairs are ordered"


def test_embedding_shards_carry_model_and_dims(faces_ws: Context) -> None:
    with faces_ws.catalog.engine.connect() as conn:
        shards = conn.execute(sa.select(Shard.space, Shard.columns).where(Shard.content == "embedding")).all()
    if not shards:
        embed_dataset(faces_ws, "faces", "dlib-resnet", "dlib", unit_size=64, workers=0, quiet=True)
        with faces_ws.catalog.engine.connect() as conn:
            shards = conn.execute(
                sa.select(Shard.space, Shard.columns).where(Shard.content == "embedding")
            ).all()
    assert shards and all(s.space == "dlib-resnet" and s.columns == {"embedding": [128]} for s in shards)


KILLED_EMBED = """
import sys
from synthdb.context import Context
from synthdb.embed_dataset import embed_dataset
embed_dataset(Context.open(sys.argv[1]), "faces", "dlib-resnet", "dlib", unit_size=2, workers=0, quiet=True)
"""


@pytest.mark.slow
def test_resume_after_sigkill_has_no_duplicates(tmp_path: Path, faces_dir: Path) -> None:
    from synthdb.admin import init_workspace

    small = tmp_path / "small"
    faces_as_imagefolder(faces_dir, small)
    for folder in small.iterdir():  # keep five identities: enough units to kill mid-way
        if folder.name not in {"obama", "biden", "angelina", "mark", "alex_lacamoire"}:
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
    ctx = init_workspace(tmp_path / "ws")
    import_named(ctx, "imagefolder", small, name="faces")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHDB_")}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EMBED, str(ctx.ws.root)], env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        with ctx.catalog.engine.connect() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(Shard)).scalar_one() >= 2:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ctx.catalog.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(Shard)).scalar_one()
    assert 2 <= before < 8, "the kill should land mid-run"
    report = embed_dataset(ctx, "faces", "dlib-resnet", "dlib", unit_size=2, workers=0, quiet=True)
    assert report.already_done >= 4 and report.already_done + report.embedded == 15
    rows = query(ctx, "SELECT sample_id, count(*) AS n FROM embeddings GROUP BY 1").to_pylist()
    assert len(rows) == 15 and all(r["n"] == 1 for r in rows)
    again = embed_dataset(ctx, "faces", "dlib-resnet", "dlib", unit_size=2, workers=0, quiet=True)
    assert again.run_id is None and again.already_done == 15
    from synthdb.store.fsck import fsck

    assert not fsck(ctx.catalog, ctx.store).missing and not fsck(ctx.catalog, ctx.store).corrupt
