"""Workspace creation, discovery and configuration errors."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from synthdb import workspace
from synthdb.admin import info, init_workspace
from synthdb.analysis.query import query
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.store.fsck import fsck
from tests.conftest import CliRun


def test_init_creates_config_catalog_and_store(tmp_path: Path) -> None:
    ctx = init_workspace(tmp_path / "ws")
    try:
        assert (tmp_path / "ws" / "synthdb.toml").is_file()
        assert (tmp_path / "ws" / "catalog.db").is_file()
        assert (tmp_path / "ws" / "store" / "shards").is_dir()
        data = info(ctx)
        assert data["schema_revision"] == data["schema_head"]
        assert set(data["counts"]) >= {"dataset", "identity", "sample", "run", "shard", "vector_index"}
        assert data["counts"].pop("store") == 1  # the catalog records its store (synthdb.catalog.stores)
        assert all(n == 0 for n in data["counts"].values())
    finally:
        ctx.close()


def test_init_twice_is_refused(tmp_path: Path) -> None:
    init_workspace(tmp_path).close()
    with pytest.raises(SynthdbError, match="already exists"):
        init_workspace(tmp_path)


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    init_workspace(tmp_path / "a").close()
    init_workspace(tmp_path / "b").close()
    deep = tmp_path / "a" / "x" / "y"
    deep.mkdir(parents=True)
    monkeypatch.delenv(workspace.ENV_WORKSPACE, raising=False)
    assert workspace.find(start=deep).root == (tmp_path / "a").resolve()
    monkeypatch.setenv(workspace.ENV_WORKSPACE, str(tmp_path / "b"))
    assert workspace.find(start=deep).root == (tmp_path / "b").resolve()
    assert workspace.find(tmp_path / "a", start=deep).root == (tmp_path / "a").resolve()


def test_no_workspace_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workspace.ENV_WORKSPACE, raising=False)
    with pytest.raises(SynthdbError, match=r"no synthdb workspace found .* run `synthdb init DIR`"):
        workspace.find(start=tmp_path)
    with pytest.raises(SynthdbError, match="holds no synthdb.toml"):
        workspace.find(tmp_path / "nowhere")


def test_malformed_config(tmp_path: Path) -> None:
    (tmp_path / "synthdb.toml").write_text('catalog_url = "sqlite:///x.db\n')
    with pytest.raises(SynthdbError, match=r"synthdb.toml is not valid TOML .*fix the file"):
        workspace.load(tmp_path)
    (tmp_path / "synthdb.toml").write_text('catalog = "x"\n')
    with pytest.raises(SynthdbError, match="unknown setting.*catalog.*allowed are"):
        workspace.load(tmp_path)
    (tmp_path / "synthdb.toml").write_text("store = 3\n")
    with pytest.raises(SynthdbError, match="'store' must be a string"):
        workspace.load(tmp_path)


def test_relative_paths_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "synthdb.toml").write_text('catalog_url = "sqlite:///db/cat.db"\nstore = "data"\n')
    ws = workspace.load(tmp_path)
    assert ws.catalog_url == f"sqlite:///{tmp_path.resolve() / 'db' / 'cat.db'}"
    assert ws.store == tmp_path.resolve() / "data"
    monkeypatch.setenv("SYNTHDB_CATALOG_URL", "postgresql://u@h/db")
    monkeypatch.setenv("SYNTHDB_STORE", "/shared/store")
    ws = workspace.load(tmp_path)
    assert ws.catalog_url == "postgresql+psycopg://u@h/db"
    assert ws.store == Path("/shared/store")


def test_schema_newer_than_code_is_refused(sqlite_ctx: Context) -> None:
    with sqlite_ctx.catalog.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00dcafe'")
    with pytest.raises(SynthdbError, match="newer than this synthdb knows.*upgrade synthdb"):
        Context.open(sqlite_ctx.ws.root)


def test_catalog_without_schema_asks_for_upgrade(sqlite_ctx: Context) -> None:
    with sqlite_ctx.catalog.begin() as conn:
        conn.exec_driver_sql("DELETE FROM alembic_version")
    with pytest.raises(SynthdbError, match="has no synthdb schema: run `synthdb db upgrade`"):
        Context.open(sqlite_ctx.ws.root)


def test_unsupported_catalog_url(tmp_path: Path) -> None:
    with pytest.raises(SynthdbError, match="supports sqlite:/// and postgresql://"):
        init_workspace(tmp_path, catalog_url="mysql://localhost/x")
    assert not (tmp_path / "synthdb.toml").exists()


# ------------------------------------------------------------------------ team workspaces: one store


def _member(tmp_path: Path, name: str, catalog_url: str, store: str | None = None) -> Context:
    models = str(tmp_path / "m")
    return init_workspace(tmp_path / name, catalog_url=catalog_url, store=store, models_dir=models)


def _one_line(excinfo: pytest.ExceptionInfo[SynthdbError]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_a_second_member_without_store_gets_the_teams_store(catalog_url: str, tmp_path: Path) -> None:
    """Regression: ``synthdb init DIR --catalog-url URL`` without ``--store`` made an empty store of its own,
    and every query failed on every shard. Now it finds the store the catalog records, on SQLite and
    PostgreSQL, and reads the first member's shards."""
    from tests.test_datasets import make_vectors

    first = _member(tmp_path, "first", catalog_url)
    make_vectors(first, "gen")
    second = _member(tmp_path, "second", catalog_url)
    assert second.store.root == first.store.root and second.ws.store_id == first.ws.store_id
    assert f'store = "{first.store.root}"' in second.ws.config_path.read_text()
    assert query(second, "SELECT count(*) AS n FROM embeddings").to_pylist() == [{"n": 6}]
    assert fsck(second.catalog, second.store).clean
    first.close()
    second.close()


def test_a_machine_without_the_recorded_store_is_told_to_pass_store(catalog_url: str, tmp_path: Path) -> None:
    """Where the recorded folder is not there, nothing is written and the error says what to pass; the
    folder where the store is mounted on this machine is accepted (its marker proves it)."""
    first = _member(tmp_path, "first", catalog_url)
    first.close()
    mounted = tmp_path / "mounted-here"
    first.store.root.rename(mounted)
    with pytest.raises(SynthdbError, match="which this machine does not have: pass --store DIR") as refused:
        _member(tmp_path, "second", catalog_url)
    assert f"recorded at {first.store.root}" in _one_line(refused)
    assert not (tmp_path / "second" / "synthdb.toml").exists()
    second = _member(tmp_path, "second", catalog_url, store=str(mounted))
    assert second.ws.store_id == first.ws.store_id
    second.close()


def test_a_store_that_is_not_the_teams_is_refused_on_init(catalog_url: str, tmp_path: Path) -> None:
    """An empty folder and another workspace's (marked) store are both refused, naming the team's store."""
    first = _member(tmp_path, "first", catalog_url)
    other = init_workspace(tmp_path / "other", models_dir=str(tmp_path / "m"))  # its own SQLite catalog
    for store, what in ((tmp_path / "empty", "carries no .synthdb-store marker"),
                        (other.store.root, f"is marked as store '{other.ws.store_id}'")):
        with pytest.raises(SynthdbError, match=what) as refused:
            _member(tmp_path, "second", catalog_url, store=str(store))
        assert f"store '{first.ws.store_id}'" in _one_line(refused)
        assert "pass --store DIR" in str(refused.value)
        assert not (tmp_path / "second" / "synthdb.toml").exists()
    first.close()
    other.close()


def test_opening_a_workspace_whose_store_is_another_is_refused(tmp_path: Path, synthdb_cli: CliRun) -> None:
    """A workspace made before the check (store of its own, recorded in its synthdb.toml) is refused when
    opened, in one line that names the team's store and the fix, at the CLI too; pointing ``store`` at the
    team's folder fixes it, and ``store adopt`` records the right id."""
    from synthdb.admin import adopt

    first = init_workspace(tmp_path / "first", models_dir=str(tmp_path / "m"))
    other = init_workspace(tmp_path / "other", models_dir=str(tmp_path / "m"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "synthdb.toml").write_text(
        f'catalog_url = "sqlite:///{first.ws.root / "catalog.db"}"\nstore = "{other.store.root}"\n'
        f'store_id = "{other.ws.store_id}"\n'
    )
    mismatch = f"is store '{other.ws.store_id}', but this catalog's shards"
    with pytest.raises(SynthdbError, match=mismatch) as refused:
        Context.open(broken)
    assert "synthdb store adopt" in _one_line(refused) and str(first.store.root) in str(refused.value)
    output = synthdb_cli("query", "SELECT 1", ws=str(broken), code=1).output
    assert output.count("\n") == 1 and "this catalog's shards are in store" in output
    workspace.record_setting(broken, "store", str(first.store.root))
    with Context.open(broken) as fixed:  # the marker proves the folder before synthdb.toml is fixed
        assert fixed.store.root == first.store.root
    assert adopt(broken)[1] == first.ws.store_id
    assert f'store_id = "{first.ws.store_id}"' in (broken / "synthdb.toml").read_text()
    first.close()
    other.close()


def test_a_catalog_with_shards_but_no_recorded_store_needs_store(tmp_path: Path) -> None:
    """Catalogs from before stores were recorded: their shards are somewhere, so a new member must name the
    folder; naming it records it for the members after."""
    from synthdb.catalog.schema import StoreRecord
    from tests.test_datasets import make_vectors

    first = init_workspace(tmp_path / "first", models_dir=str(tmp_path / "m"))
    make_vectors(first, "gen")
    with first.catalog.begin() as conn:
        conn.execute(sa.delete(StoreRecord.__table__))
    url = f"sqlite:///{first.ws.root / 'catalog.db'}"
    with pytest.raises(SynthdbError, match="lists 2 shards but records no store: pass --store") as refused:
        _member(tmp_path, "second", url)
    _one_line(refused)
    _member(tmp_path, "second", url, store=str(first.store.root)).close()
    third = _member(tmp_path, "third", url)  # recorded now
    assert third.store.root == first.store.root
    first.close()
    third.close()


def test_adopt_restores_a_lost_marker_only_where_the_shards_are(tmp_path: Path) -> None:
    """``store adopt`` gives an unmarked folder the catalog's store id, but only a folder holding the
    catalog's shard files: an empty folder named by mistake is not passed off as the team's store."""
    from synthdb.admin import adopt
    from tests.test_datasets import make_vectors

    ctx = init_workspace(tmp_path / "ws", models_dir=str(tmp_path / "m"))
    make_vectors(ctx, "gen")
    (ctx.store.root / ".synthdb-store").unlink()
    ws, store_id = adopt(ctx.ws.root)
    assert store_id == ctx.ws.store_id and fsck(ctx.catalog, ctx.store).clean
    workspace.record_setting(ctx.ws.root, "store", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthdbError, match="holds none of the catalog's shard files") as refused:
        adopt(ctx.ws.root)
    _one_line(refused)
    assert not (tmp_path / "empty" / ".synthdb-store").exists()
    ctx.close()


