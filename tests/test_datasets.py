"""``synthdb datasets list|show|rename|delete`` (:mod:`synthdb.datasets`) on real catalogs and stores.

Datasets are made by the real commit protocol (vectors, samples, identities, a stats table) and a real
imagefolder import; deletes are checked against the catalog's rows, the FAISS index rows over the dataset
and, after ``gc``, the store's files.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthdb import datasets as api
from synthdb.analysis.index import build_index
from synthdb.analysis.query import query
from synthdb.catalog import runs
from synthdb.catalog.datasets import create_dataset, find_dataset
from synthdb.catalog.schema import DatasetKind, RunKind, RunStatus, ShardContent
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.sources.registry import import_named
from synthdb.store.commit import NewSamples, ShardSpec, TableSpec, commit
from synthdb.store.fsck import fsck, gc
from tests.conftest import CliRun
from tests.sources.test_databases import png_bytes, touch


def make_vectors(
    ctx: Context, name: str, identities: int = 3, per: int = 2, run_id: int | None = None
) -> int:
    """A generated dataset with ``identities * per`` samples, their 8-d embeddings and a stats table."""
    dataset = create_dataset(ctx.catalog, name, DatasetKind.SYNTHETIC, "generated", run_id=run_id)
    labels = [f"{i:05d}" for i in range(identities) for _ in range(per)]
    rng = np.random.default_rng(len(name))
    commit(
        ctx.catalog,
        ctx.store,
        dataset_id=dataset,
        run_id=run_id,
        unit="ids/000000",
        samples=NewSamples(
            keys=[f"{label}/{k % per}" for k, label in enumerate(labels)],
            role="reference",
            identity_labels=labels,
        ),
        shards=[ShardSpec(ShardContent.EMBEDDING, "toy", {"embedding": rng.normal(size=(len(labels), 8))})],
        tables=[TableSpec(ShardContent.STATS, None, {"iteration": np.arange(2), "x": np.ones(2)})],
    )
    return dataset


def make_folder(ctx: Context, root: Path, name: str = "photos") -> None:
    for person in ("ann", "bob"):
        for k in range(2):
            touch(root / person / f"{k}.png", png_bytes())
    import_named(ctx, "imagefolder", root, name=name)


def _one_line(excinfo: pytest.ExceptionInfo[SynthdbError]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_list_show_rename_delete_then_gc(ctx: Context, tmp_path: Path) -> None:
    """The whole life of a dataset, on SQLite and PostgreSQL: its rows, its index row and (after gc) its
    files go; the other dataset keeps everything."""
    make_folder(ctx, tmp_path / "photos")
    make_vectors(ctx, "gen")
    build_index(ctx, "gen", "toy", quiet=True)
    listed = {row.name: row for row in api.list_datasets(ctx)}
    assert set(listed) == {"photos", "gen"}
    assert (listed["gen"].samples, listed["gen"].identities) == (6, 3)
    assert (listed["photos"].samples, listed["photos"].identities, listed["photos"].kind) == (4, 2, "genuine")

    shown = api.show_dataset(ctx, "gen")
    assert shown.contents.roles == {"reference": 6} and shown.contents.indexes == 1
    assert {(g.content, g.space, g.shards, g.rows) for g in shown.contents.shard_groups} == {
        ("embedding", "toy", 1, 6),
        ("stats", None, 1, 2),
    }
    assert "6 samples, 3 identities, 2 shard files" in shown.describe()

    renamed = api.rename_dataset(ctx, "gen", "gen-v2")
    assert renamed.name == "gen-v2" and find_dataset(ctx.catalog, "gen") is None
    assert query(ctx, "SELECT DISTINCT dataset FROM embeddings").column(0).to_pylist() == ["gen-v2"]

    seen: list[str] = []
    deleted = api.delete_dataset(ctx, "gen-v2", lambda details: seen.append(details.describe()) or True)
    assert deleted is not None and seen and "gen-v2" in seen[0]
    assert find_dataset(ctx.catalog, "gen-v2") is None
    assert query(ctx, "SELECT count(*) FROM embeddings").column(0).to_pylist() == [0]
    assert query(ctx, "SELECT count(*) FROM catalog.vector_index").column(0).to_pylist() == [0]
    left = fsck(ctx.catalog, ctx.store, verify=False)
    assert len(left.orphans) == 3 and not left.missing  # two shards and the index: no row references them
    removed = gc(ctx.catalog, ctx.store, min_age=0).removed_files
    assert sorted(removed) == sorted(left.orphans) and fsck(ctx.catalog, ctx.store).clean
    assert [row.name for row in api.list_datasets(ctx)] == ["photos"]
    assert api.show_dataset(ctx, "photos").contents.samples == 4


def test_a_no_from_confirm_keeps_everything(sqlite_ctx: Context) -> None:
    make_vectors(sqlite_ctx, "gen")
    assert api.delete_dataset(sqlite_ctx, "gen", lambda _details: False) is None
    assert api.show_dataset(sqlite_ctx, "gen").contents.samples == 6


def test_rename_and_delete_refuse_while_a_run_uses_the_dataset(sqlite_ctx: Context) -> None:
    """A live run that wrote into the dataset, or that names it in its parameters (an embed that has not
    committed yet), blocks both; a run whose process is gone does not."""
    ctx = sqlite_ctx
    writer = runs.start_run(ctx.catalog, RunKind.REFERENCES, "random", {"name": "gen"})
    make_vectors(ctx, "gen", run_id=writer)
    reader = runs.start_run(ctx.catalog, RunKind.EMBED, "toy/none", {"dataset": "other"})
    make_vectors(ctx, "other")
    for name, run_id in (("gen", writer), ("other", reader)):
        with pytest.raises(SynthdbError, match=f"run {run_id} .* is using dataset '{name}'") as refused:
            api.delete_dataset(ctx, name, lambda _details: True)
        assert "wait for it" in _one_line(refused)
        with pytest.raises(SynthdbError, match="before you rename it"):
            api.rename_dataset(ctx, name, f"{name}-renamed")
        assert find_dataset(ctx.catalog, name) is not None
    runs.finish_run(ctx.catalog, reader, RunStatus.SUCCEEDED)
    assert api.rename_dataset(ctx, "other", "other-renamed").name == "other-renamed"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    with ctx.catalog.begin() as conn:  # the writer's process died without closing its row
        conn.exec_driver_sql(f"UPDATE run SET pid = {int(gone.stdout)} WHERE id = {writer}")
    with pytest.raises(SynthdbError, match=f"runs resume {writer}") as unfinished:
        api.rename_dataset(ctx, "gen", "gen-renamed")  # resume finds its output by the recorded name
    _one_line(unfinished)
    assert api.delete_dataset(ctx, "gen", lambda _details: True) is not None
    make_vectors(ctx, "refs")  # an interrupted variations run finds its --references by name when resumed
    variations = runs.start_run(
        ctx.catalog, RunKind.VARIATIONS, "dispersion", {"name": "v", "references": "refs"}
    )
    runs.finish_run(ctx.catalog, variations, RunStatus.INTERRUPTED)
    with pytest.raises(SynthdbError, match=f"runs resume {variations}"):
        api.rename_dataset(ctx, "refs", "refs-renamed")


@pytest.mark.parametrize(
    ("new_name", "why"),
    [
        ("", "not a usable dataset name"),
        ("a\nb", "not a usable dataset name"),
        ("x" * 201, "not a usable"),
        ("\x1b[31mred", "not a usable dataset name"),
        ("taken", "exists already"),
    ],
)
def test_rename_refuses_bad_and_taken_names(sqlite_ctx: Context, new_name: str, why: str) -> None:
    make_vectors(sqlite_ctx, "gen")
    make_vectors(sqlite_ctx, "taken")
    with pytest.raises(SynthdbError, match=why) as refused:
        api.rename_dataset(sqlite_ctx, "gen", new_name)
    _one_line(refused)
    assert find_dataset(sqlite_ctx.catalog, "gen") is not None


def test_cli_delete_needs_yes_without_a_terminal(sqlite_ctx: Context, synthdb_cli: CliRun) -> None:
    """Piped (no terminal to ask on) the delete is refused in one line, never waiting for input."""
    make_vectors(sqlite_ctx, "gen")
    ws = str(sqlite_ctx.ws.root)
    output = synthdb_cli("datasets", "delete", "gen", ws=ws, input="y\n", code=1).output
    assert output.count("\n") == 1 and "needs --yes (no terminal to ask on)" in output
    assert find_dataset(sqlite_ctx.catalog, "gen") is not None
    output = synthdb_cli("datasets", "list", ws=ws, code=0).output
    assert output.startswith("gen ")
    output = synthdb_cli("datasets", "show", "gen", ws=ws, code=0).output
    assert "reference" in output and "shards embedding" in output
    output = synthdb_cli("datasets", "rename", "gen", "renamed", ws=ws, code=0).output
    assert "is now 'renamed'" in output
    output = synthdb_cli("datasets", "delete", "renamed", "--yes", ws=ws, code=0).output
    assert "synthdb gc` removes its 2 shard files" in output
    output = synthdb_cli("datasets", "show", "renamed", ws=ws, code=1).output
    assert output.count("\n") == 1 and "no dataset named 'renamed'" in output


def _delete_on_a_terminal(ws: Path, answer: bytes) -> str:
    """``synthdb datasets delete gen`` with a pseudo-terminal as stdin, answering ``answer``."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthdb.cli.main", "-w", str(ws), "datasets", "delete", "gen"],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    os.write(leader, answer)
    out, err = proc.communicate(timeout=120)
    os.close(leader)
    assert proc.returncode == 0, err
    return out.decode() + err.decode()


def test_cli_delete_asks_on_a_terminal(sqlite_ctx: Context) -> None:
    make_vectors(sqlite_ctx, "gen")
    output = _delete_on_a_terminal(sqlite_ctx.ws.root, b"n\n")
    assert "delete dataset 'gen' (synthetic, generated): 6 samples" in output
    assert "dataset 'gen' kept" in output
    assert find_dataset(sqlite_ctx.catalog, "gen") is not None
    output = _delete_on_a_terminal(sqlite_ctx.ws.root, b"y\n")
    assert "deleted dataset 'gen'" in output and find_dataset(sqlite_ctx.catalog, "gen") is None
