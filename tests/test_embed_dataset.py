"""``synthdb embed`` on the real shared photos: detection, separation, issues, resume after SIGKILL."""

import itertools
import os
import re
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
from tests.sources.test_importer import faces_as_imagefolder

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
    # the other detector's run may have embedded everything: --replace starts over with this detector
    report = embed_dataset(faces_ws, "faces", model, detector, unit_size=16, workers=1, replace=True)
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


# --------------------------------------------------- one detector per model, issues, progress (issue 17)


def _folder(root: Path, files: dict[str, str]) -> Path:
    """``root/<identity>/<file>`` from the test photos (``file: identity``); a name that is not one of them
    gets bytes that are no image."""
    from tests.conftest import FACES

    for name, identity in files.items():
        (root / identity).mkdir(parents=True, exist_ok=True)
        source = FACES / name
        (root / identity / name).write_bytes(source.read_bytes() if source.exists() else b"not an image")
    return root


def _runs(ctx: Context) -> int:
    from synthdb.catalog.runs import list_runs

    return len(list_runs(ctx.catalog, None))


@pytest.mark.slow
def test_another_detector_is_refused_and_replace_re_embeds(sqlite_ctx: Context, tmp_path: Path) -> None:
    """Regression: ``--detector`` was silently ignored for a dataset embedded already with another one.
    It is refused in one line naming the detector and run that made the vectors, before any run is
    recorded; ``replace`` retires them and re-embeds everything with the new detector."""
    from synthdb.catalog.runs import get_run
    from synthdb.errors import SynthdbError
    from synthdb.store.fsck import fsck, gc

    ctx = sqlite_ctx
    photos = {"obama_01.jpg": "obama", "biden_01.jpg": "biden", "noface_01.jpg": "x"}
    root = _folder(tmp_path / "photos", photos)
    import_named(ctx, "imagefolder", root, name="faces")
    first = embed_dataset(ctx, "faces", detector="none", workers=0)
    assert first.embedded == 3
    runs_before = _runs(ctx)
    with pytest.raises(SynthdbError, match=rf"made with --detector none \(run {first.run_id}\)") as refused:
        embed_dataset(ctx, "faces", detector="dlib", workers=0)
    assert "\n" not in str(refused.value) and "--replace" in str(refused.value)
    assert _runs(ctx) == runs_before  # refused before a run was recorded
    again = embed_dataset(ctx, "faces", detector="dlib", workers=0, replace=True)
    assert (again.replaced, again.embedded, again.issues) == (1, 2, {"no_face": 1})
    rows = query(ctx, "SELECT count(*) AS n FROM embeddings").to_pylist()
    assert rows == [{"n": 2}]  # the detector-less vectors are retired, not mixed in
    with pytest.raises(SynthdbError, match=rf"made with --detector dlib \(run {again.run_id}\)"):
        embed_dataset(ctx, "faces", detector="none", workers=0)
    assert embed_dataset(ctx, "faces", detector="dlib", workers=0).run_id is None  # the same one: done
    assert get_run(ctx.catalog, again.run_id).summary["replaced_shards"] == 1
    gc(ctx.catalog, ctx.store, min_age=0)
    assert fsck(ctx.catalog, ctx.store).clean


def test_replace_keeps_the_vectors_no_embed_run_made(sqlite_ctx: Context) -> None:
    """Regression: ``--replace`` retired every embedding shard of the model, the generator's own too, which
    nothing can compute again from the images. It retires only what embed runs made."""
    from synthdb.catalog import shards
    from synthdb.catalog.datasets import dataset_id
    from synthdb.catalog.schema import ShardContent
    from synthdb.generate.dataset_images import generate_dataset_images
    from synthdb.generate.references import ReferenceParams, generate_references

    ctx = sqlite_ctx
    generate_references(
        ctx, ReferenceParams(generator="stylegan2-tiny", name="g", algorithm="random", num_identities=2)
    )
    generate_dataset_images(ctx, "g")
    did = dataset_id(ctx.catalog, "g")

    def embedding_shards() -> list[int]:
        found = shards.committed(ctx.catalog, dataset_id=did, contents=[ShardContent.EMBEDDING])
        return sorted(row.id for row in found)

    made = embedding_shards()
    assert made  # the generator committed its embeddings with its latents
    report = embed_dataset(ctx, "g", detector="none", workers=0, replace=True)
    assert report.replaced == 0 and embedding_shards() == made


def test_issues_alone_tie_a_dataset_to_its_detector(sqlite_ctx: Context, tmp_path: Path) -> None:
    """A dataset where every file failed holds no vector, only issues: those name the detector too (before,
    another detector was told "all embedded" and did nothing)."""
    from synthdb.errors import SynthdbError

    root = _folder(tmp_path / "junk", {"junk_01.jpg": "a", "junk_02.jpg": "b"})
    import_named(sqlite_ctx, "imagefolder", root, name="junk")
    first = embed_dataset(sqlite_ctx, "junk", detector="mtcnn", workers=0)
    assert (first.embedded, first.issues) == (0, {"unreadable": 2})
    with pytest.raises(SynthdbError, match=rf"made with --detector mtcnn \(run {first.run_id}\)"):
        embed_dataset(sqlite_ctx, "junk", detector="none", workers=0)


@pytest.mark.slow
def test_a_later_run_reports_the_issues_of_the_whole_dataset(ctx: Context, tmp_path: Path) -> None:
    """Regression: after a resumed embed the summary counted only its own issues. A run that finishes a
    dataset reports (and records) the whole dataset's, and what it met itself apart; SQLite and PostgreSQL."""
    from synthdb.catalog.runs import get_run

    root = _folder(tmp_path / "photos", {"obama_01.jpg": "obama", "noface_01.jpg": "noface"})
    import_named(ctx, "imagefolder", root, name="faces")
    first = embed_dataset(ctx, "faces", detector="dlib", workers=0)
    assert first.issues == first.new_issues == {"no_face": 1}
    _folder(root, {"group_01.jpg": "group"})
    import_named(ctx, "imagefolder", root, name="faces", update=True)
    later = embed_dataset(ctx, "faces", detector="dlib", workers=0)
    assert (later.already_done, later.embedded) == (2, 1)
    assert later.issues == {"multiple_faces": 1, "no_face": 1} and later.new_issues == {"multiple_faces": 1}
    summary = get_run(ctx.catalog, later.run_id).summary
    assert summary["issues"] == later.issues and summary["new_issues"] == later.new_issues


PROGRESS_LINE = re.compile(r"^embed faces: (\d+)/(\d+) images, [\d.]+/s(, eta \w+)?$")


@pytest.mark.slow
def test_progress_moves_per_image_chunk_on_a_pipe(tmp_path: Path) -> None:
    """Regression: progress moved once per committed unit (0/30 for 34 s). With stderr a pipe (and
    --quiet) no bar is drawn, but periodic one-line reports are, and they count images within the one
    unit of this run, before it commits."""
    from synthdb.admin import init_workspace
    from synthdb.embed_dataset import DETECT_CHUNK
    from tests.conftest import FACES

    files = {f.name: f.stem.rsplit("_", 1)[0] for f in sorted(FACES.glob("*_0[12].*"))}
    files = dict(list(files.items())[: DETECT_CHUNK + 4])
    root = _folder(tmp_path / "photos", files)
    with init_workspace(tmp_path / "ws", models_dir=str(tmp_path / "models")) as ctx:
        import_named(ctx, "imagefolder", root, name="faces")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHDB_")}
    env["SYNTHDB_PROGRESS_INTERVAL"] = "0.05"
    proc = subprocess.run(
        [sys.executable, "-m", "synthdb.cli.main", "-w", str(tmp_path / "ws"), "-q", "embed", "faces",
         "--detector", "dlib", "--workers", "0", "--unit-size", "256"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line]
    counts = [PROGRESS_LINE.match(line) for line in lines]
    assert all(counts), lines  # nothing but progress lines, each on one line
    done = [int(m.group(1)) for m in counts]
    assert {int(m.group(2)) for m in counts} == {len(files)} and done == sorted(done)
    assert DETECT_CHUNK in done  # the first chunk counted while the unit was still being embedded
    assert "images embedded with dlib-resnet" in proc.stdout
