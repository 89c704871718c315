"""Workspace creation, discovery and configuration errors."""

from pathlib import Path

import pytest

from synthdb import workspace
from synthdb.admin import info, init_workspace
from synthdb.context import Context
from synthdb.errors import SynthdbError


def test_init_creates_config_catalog_and_store(tmp_path: Path) -> None:
    ctx = init_workspace(tmp_path / "ws")
    try:
        assert (tmp_path / "ws" / "synthdb.toml").is_file()
        assert (tmp_path / "ws" / "catalog.db").is_file()
        assert (tmp_path / "ws" / "store" / "shards").is_dir()
        data = info(ctx)
        assert data["schema_revision"] == data["schema_head"]
        assert set(data["counts"]) >= {"dataset", "identity", "sample", "run", "shard", "vector_index"}
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
