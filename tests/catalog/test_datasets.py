"""Names that two processes take at the same moment: the loser gets the one-line "exists already" error.

On PostgreSQL the second insert waits on the first transaction's unique-index entry and then fails with a
unique violation; the test holds a competing transaction open until the call under test is seen waiting
on that lock (pg_stat_activity), then commits it, so the race happens every time, not by chance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from synthdb.admin import init_workspace
from synthdb.catalog import directions
from synthdb.catalog.datasets import create_dataset, find_dataset, get_dataset
from synthdb.context import Context
from synthdb.errors import SynthdbError

WAIT_S = 60.0  # a safety net only: the test proceeds as soon as the call is seen waiting


@pytest.fixture
def pg_ctx(postgres_url: str, tmp_path: Path) -> Context:
    context = init_workspace(tmp_path / "ws", catalog_url=postgres_url, models_dir=str(tmp_path / "models"))
    yield context
    context.close()


def _lost_race(ctx: Context, competing: str, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` while another transaction has inserted the same name (``competing`` SQL) and not yet
    committed; commit it once ``call`` waits for it; return what ``call`` raised."""
    outcome: dict[str, BaseException | None] = {"error": None}
    other = ctx.catalog.engine.connect()
    transaction = other.begin()
    other.exec_driver_sql(competing)

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    seen = _seen_waiting(ctx)
    transaction.commit()
    other.close()
    worker.join(WAIT_S)
    assert seen, "the call never waited for the competing transaction"
    return outcome["error"]


def _seen_waiting(ctx: Context) -> bool:
    """Whether a session of the catalog waits on a lock within WAIT_S (one snapshot of the statistics
    per transaction, so each look is a transaction of its own)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with ctx.catalog.engine.connect() as probe:
            waiting = probe.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
        if waiting:
            return True
        time.sleep(0.01)
    return False


def test_a_dataset_name_taken_meanwhile(pg_ctx: Context) -> None:
    error = _lost_race(
        pg_ctx,
        "INSERT INTO dataset (name, kind, source) VALUES ('twin', 'synthetic', 'generated')",
        lambda: create_dataset(pg_ctx.catalog, "twin", "synthetic", "generated"),
    )
    assert isinstance(error, SynthdbError)
    assert str(error) == "a dataset named 'twin' exists already: choose another --name"
    assert find_dataset(pg_ctx.catalog, "twin").source == "generated"


def test_a_direction_set_name_taken_meanwhile(pg_ctx: Context) -> None:
    row = directions.DirectionSetRow("smiles", "g", "all", 2, None, None, [])
    error = _lost_race(
        pg_ctx,
        "INSERT INTO direction_set (name, generator, protocol, w_dim, directions) "
        "VALUES ('smiles', 'g', 'all', 2, '[]')",
        lambda: directions.insert(pg_ctx.catalog, row),
    )
    assert isinstance(error, SynthdbError) and "direction set named 'smiles' exists already" in str(error)
    assert [s.name for s in directions.every_set(pg_ctx.catalog)] == ["smiles"]


def test_dataset_rows_read_back(ctx: Context) -> None:
    made = create_dataset(ctx.catalog, "d", "genuine", "ffhq", root="/data/ffhq", attributes={"a": 1})
    row = get_dataset(ctx.catalog, "d")
    assert (row.id, row.kind, row.source, row.root, row.attributes) == (
        made,
        "genuine",
        "ffhq",
        "/data/ffhq",
        {"a": 1},
    )
    assert find_dataset(ctx.catalog, "nope") is None
    with pytest.raises(
        SynthdbError, match=r"^no dataset named 'nope' in the catalog \(known: d\): check the name$"
    ):
        get_dataset(ctx.catalog, "nope")
    with pytest.raises(SynthdbError, match="exists already"):
        create_dataset(ctx.catalog, "d", "genuine", "ffhq")
