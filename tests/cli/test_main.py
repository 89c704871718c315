"""The real ``synthdb`` command line, run as a subprocess in temporary workspaces."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FACES

SYNTHDB = [sys.executable, "-m", "synthdb.cli.main"]


def run(*args: str, cwd: Path | str = "/", env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHDB_")}
    return subprocess.run(
        [*SYNTHDB, *args], cwd=cwd, capture_output=True, text=True, env={**base, **(env or {})}, timeout=300
    )


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.slow
def test_init_then_info_from_anywhere(tmp_path: Path) -> None:
    assert run("init", "ws", cwd=tmp_path).returncode == 0
    for args in (
        ["info", "--workspace", str(tmp_path / "ws")],
        ["-w", str(tmp_path / "ws"), "info", "--json"],
    ):
        proc = run(*args, cwd="/")
        assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema_revision"] == data["schema_head"] and data["counts"]["sample"] == 0
    walked = run("info", cwd=tmp_path / "ws" / "store")  # found by walking up, like git
    assert walked.returncode == 0 and str(tmp_path / "ws") in walked.stdout
    env = run("db", "current", cwd="/", env={"SYNTHDB_WORKSPACE": str(tmp_path / "ws")})
    assert env.returncode == 0 and "(head: " in env.stdout


@pytest.mark.slow
def test_errors_are_one_line(tmp_path: Path) -> None:
    assert "no synthdb workspace found" in one_line_error(run("info", cwd=tmp_path))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "synthdb.toml").write_text("catalog_url = [\n")
    assert "is not valid TOML" in one_line_error(run("info", cwd=tmp_path / "bad"))
    assert "already exists" in one_line_error(run("init", "bad", cwd=tmp_path))
    pg_down = run("init", "pg", "--catalog-url", "postgresql://nobody@127.0.0.1:9/none", cwd=tmp_path)
    assert "check that it is running and reachable" in one_line_error(pg_down)
    assert not (tmp_path / "pg" / "synthdb.toml").exists()


@pytest.mark.slow
def test_demo_query_fsck_gc(tmp_path: Path) -> None:
    demo = run(
        "demo",
        str(tmp_path / "d"),
        "--identities",
        "4",
        "--per-identity",
        "2",
        "--iterations",
        "2",
        "--photos",
        str(FACES),
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stderr
    assert "intra-class" in demo.stdout and "inter-class" in demo.stdout and "dcgan-digiface" in demo.stdout
    assert re.search(r"leakage: \d+ of 4 generated identities", demo.stdout)
    assert (tmp_path / "d" / "report" / "index.html").is_file()
    assert len(list((tmp_path / "d" / "datasets" / "demo-variations").glob("*/*.png"))) == 8
    ws = ["-w", str(tmp_path / "d")]
    sql = "SELECT dataset, count(*) AS n FROM embeddings GROUP BY 1 ORDER BY 1"
    counts = run(*ws, "query", sql, "--format", "csv")
    assert counts.stdout.strip().startswith("dataset,n\ndemo-references,4\ndemo-variations,8\ngenuine,")
    refused = run(*ws, "query", "DELETE FROM catalog.sample")
    assert "read-only" in one_line_error(refused)
    assert run(*ws, "fsck").stdout.startswith("clean: ")
    stray = "staging/" + "ab" * 16 + ".parquet"  # a name synthdb writes: gc deletes no other
    (tmp_path / "d" / "store" / stray).write_bytes(b"x")
    dirty = run(*ws, "fsck")
    assert dirty.returncode == 1 and f"staged: {stray}" in dirty.stdout
    assert f"kept {stray}" in run(*ws, "gc").stdout
    assert f"removed {stray}" in run(*ws, "gc", "--min-age", "0").stdout
    assert run(*ws, "fsck").returncode == 0
    runs = run(*ws, "runs", "list").stdout.splitlines()
    assert [line.split()[:4] for line in runs[-4:]] == [
        ["4", "variations", "dispersion", "succeeded"],
        ["3", "references", "langevin", "succeeded"],
        ["2", "embed", "dlib-resnet/mtcnn", "succeeded"],
        ["1", "import", "imagefolder", "succeeded"],
    ]
    shown = run(*ws, "runs", "show", "3").stdout
    assert '"num_identities": 4' in shown and "synthdb_version" in shown
    assert "no run 9 in the catalog" in one_line_error(run(*ws, "runs", "show", "9"))


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_query_output_file(tmp_path: Path, fmt: str) -> None:
    assert run("init", "ws", cwd=tmp_path).returncode == 0
    out = tmp_path / f"r.{fmt}"
    proc = run(
        "-w", str(tmp_path / "ws"), "query", "SELECT 42 AS answer", "--format", fmt, "--output", str(out)
    )
    assert proc.returncode == 0 and out.stat().st_size > 0
