"""Importers: the common import machinery and the ImageFolder layout, on real files."""

import csv
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from synthdb.analysis.query import query
from synthdb.catalog.schema import Identity, Run, Sample
from synthdb.context import Context
from synthdb.sources.entries import Entry
from synthdb.sources.importer import ImportReport, check_file
from synthdb.sources.listing import safe_relpath
from synthdb.sources.registry import import_named


def faces_as_imagefolder(faces: Path, root: Path) -> dict[str, int]:
    """Copy the test photos into ``root/<identity>/<file>``; unlabelled photos get a folder of their own.

    Copies, not symlinks: imports refuse links that lead out of the root they were given."""
    counts: dict[str, int] = {}
    with (faces / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            identity = row["identity"] or Path(row["file"]).stem
            (root / identity).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(faces / row["file"], root / identity / row["file"])
            counts[identity] = counts.get(identity, 0) + 1
    return counts


def _count(ctx: Context, table) -> int:  # noqa: ANN001
    with ctx.catalog.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_shared_faces_import_as_imagefolder(ctx: Context, faces_dir: Path, tmp_path: Path) -> None:
    expected = faces_as_imagefolder(faces_dir, tmp_path / "faces")
    report = import_named(ctx, "imagefolder", tmp_path / "faces", name="faces")
    assert report.added == sum(expected.values()) == 34 and not report.problem_counts
    rows = query(
        ctx,
        """SELECT i.label, count(*) AS n FROM catalog.sample s
                         JOIN catalog.identity i ON i.id = s.identity_id GROUP BY 1 ORDER BY 1""",
    ).to_pylist()
    assert {r["label"]: r["n"] for r in rows} == expected
    assert expected["obama"] == 4 and expected["angelina"] == 3
    with ctx.catalog.session() as session:
        sample = session.scalars(sa.select(Sample).where(Sample.key == "obama/obama_02.jpg")).one()
        run = session.get(Run, report.run_id)
        assert sample.path == "obama/obama_02.jpg" and sample.role == "genuine" and sample.run_id == run.id
        assert run.kind == "import" and run.status == "succeeded" and run.summary["added"] == 34


def test_reimport_adds_nothing_and_update_adds_new_files(
    sqlite_ctx: Context, faces_dir: Path, tmp_path: Path
) -> None:
    faces_as_imagefolder(faces_dir, tmp_path / "faces")
    import_named(sqlite_ctx, "imagefolder", tmp_path / "faces", name="faces")
    again = import_named(sqlite_ctx, "imagefolder", tmp_path / "faces", name="faces")
    assert again.added == 0 and again.existing == 34 and "--update" in again.note
    shutil.copyfile(faces_dir / "seb_01.jpg", tmp_path / "faces" / "obama" / "extra.jpg")
    updated = import_named(sqlite_ctx, "imagefolder", tmp_path / "faces", name="faces", update=True)
    assert (updated.added, updated.existing) == (1, 34)
    assert _count(sqlite_ctx, Sample) == 35 and _count(sqlite_ctx, Identity) == 18


def test_corrupt_files_are_named_and_the_rest_imported(
    sqlite_ctx: Context, faces_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "tree"
    for ident in ("a", "b"):
        (root / ident).mkdir(parents=True)
        for k in range(3):
            (root / ident / f"{k}.jpg").write_bytes((faces_dir / "seb_01.jpg").read_bytes())
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "b" / "truncated.png").write_bytes((faces_dir / "alex_lacamoire_01.png").read_bytes()[:500])
    (root / "b" / "notes.txt").write_text("not an image")
    report = import_named(sqlite_ctx, "imagefolder", root, verify_images=True)
    assert report.added == 6
    assert report.problem_counts == {"unreadable": 2}
    assert [p.split(" ")[0] for p in report.problems["unreadable"]] == ["a/broken.jpg", "b/truncated.png"]
    with sqlite_ctx.catalog.session() as session:
        assert session.get(Run, report.run_id).summary["problem_counts"] == {"unreadable": 2}


@pytest.mark.parametrize(
    ("path", "clean"),
    [
        ("a/b.jpg", "a/b.jpg"),
        ("./a//b.jpg", "a/b.jpg"),
        ("a/../b.jpg", "b.jpg"),
        ("a/.hidden/b.jpg", "a/.hidden/b.jpg"),
        ("a/b/", "a/b"),
        ("a/./b.jpg", "a/b.jpg"),
        ("../../x", None),
        ("a/../../x", None),
        ("/etc/passwd", None),
        ("C:\\x.jpg", None),
        ("..\\..\\x", None),
        ("", None),
    ],
)
def test_paths_that_escape_the_root_are_refused(path: str, clean: str | None) -> None:
    assert safe_relpath(path) == clean


def test_a_cleaned_path_keeps_the_entry_key(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.jpg").write_bytes(b"")
    report = ImportReport(dataset="d", dataset_id=1, run_id=None)
    entry = check_file(tmp_path, Entry("images_00_00001", "./a//b.jpg", "1"), False, report)
    assert entry == Entry("images_00_00001", "a/b.jpg", "1") and not report.problem_counts
    assert check_file(tmp_path, Entry("k", "a", "1"), False, report) is None  # a folder is not an image
    assert check_file(tmp_path, Entry("k", "a/b.jpg/c", "1"), False, report) is None
    assert report.problems == {"missing": ["a", "a/b.jpg/c"]}
