"""The models a workspace can use: shipped cards, weights in the models directory, catalog rows.

A card (``models/*.toml``) says what a network is; ``synthdb models add NAME --file PATH`` (or
``fetch``) puts its weights into the models directory, checks them (sha256 when the card knows it,
and for embedders, perceptual networks and generators a real load, so a file of another architecture,
or a crafted one, is refused at once) and records the model in the catalog's ``model`` table, so runs
can name the exact weights they used.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from synthdb.catalog.schema import Model
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.files import sha256_hex
from synthdb.nets.cards import (
    ModelCard,
    build_embedder,
    check_perceptual,
    get_card,
    list_cards,
    locate_weights,
)
from synthdb.nets.fetch import fetch_weights
from synthdb.nets.generator import Generator


@dataclass(frozen=True)
class ModelStatus:
    card: ModelCard
    weights: Path | None  # None: not on this machine yet
    registered: bool


def weights_path(ctx: Context, card: ModelCard) -> Path | None:
    """The weights file of a card on this machine, or None when it has not been added or fetched."""
    if card.embedded:
        return locate_weights(card)
    with ctx.catalog.engine.connect() as conn:
        stored = conn.execute(
            sa.select(Model.weights_path).where(Model.name == card.name)
        ).scalar_one_or_none()
    for candidate in (Path(stored) if stored else None, locate_weights(card, ctx.ws.models_dir)):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def status(ctx: Context, kind: str | None = None) -> list[ModelStatus]:
    with ctx.catalog.engine.connect() as conn:
        registered = set(conn.execute(sa.select(Model.name)).scalars())
    return [ModelStatus(card, weights_path(ctx, card), card.name in registered) for card in list_cards(kind)]


def _register(ctx: Context, card: ModelCard, path: Path) -> None:
    values = {
        "kind": card.kind,
        "architecture": card.architecture,
        "weights_path": str(path),
        "sha256": sha256_hex(path),
        "license": card.license,
        "params": {
            "preset": card.preset,
            "image_size": card.image_size,
            "commercial_use": card.commercial_use,
        },
    }
    table = Model.__table__
    with ctx.catalog.begin() as conn:
        if conn.execute(sa.select(table.c.id).where(table.c.name == card.name)).first() is None:
            conn.execute(sa.insert(table).values(name=card.name, **values))
        else:
            conn.execute(sa.update(table).where(table.c.name == card.name).values(**values))


def _verify(card: ModelCard, path: Path) -> None:
    if card.sha256 and (actual := sha256_hex(path)) != card.sha256:
        raise SynthdbError(
            f"{path} has sha256 {actual}, but the {card.name} card expects "
            f"{card.sha256}: this is another file or a damaged copy"
        )
    if card.kind == "embedder":
        build_embedder(card, path)  # refuses truncated files and other architectures with a clear error
    elif card.kind == "perceptual":
        check_perceptual(card, path)  # the same for the two halves of LPIPS
    elif card.kind == "generator":  # a real load, bounded like every load: a hostile file is refused here
        Generator.from_file(path, name=card.name, architecture=card.architecture)


def add(ctx: Context, name: str, file: str | Path) -> Path:
    """Copy ``file`` into the models directory as the weights of card ``name``, verify and register it."""
    card = get_card(name)
    source = Path(file).expanduser().resolve()
    if not source.is_file():
        raise SynthdbError(f"{source} does not exist: pass the path of the {card.name} weights file")
    if card.embedded:
        raise SynthdbError(f"{card.name} ships with the installed package {card.package}: nothing to add")
    _verify(card, source)
    dest = locate_weights(card, ctx.ws.models_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest != source:
        staged = dest.with_name(dest.name + ".partial")
        shutil.copyfile(source, staged)
        staged.replace(dest)
    _register(ctx, card, dest)
    return dest


def fetch(ctx: Context, name: str, progress: bool = True) -> Path:
    """Download card ``name``'s weights (sha256-checked) into the models directory and register them."""
    card = get_card(name)
    path = fetch_weights(card, ctx.ws.models_dir, progress=progress)
    _verify(card, path)
    _register(ctx, card, path)
    return path
