"""Model cards: what synthdb knows about each network, as data, and the builder of embedders.

Like timm, architectures (``iresnet.py``, ``adaface.py``, ...) are separate from pretrained configurations:
a card in ``models/*.toml`` (installed as the package ``synthdb.model_cards``) names its architecture, its
weights file and where it comes from, its sha256 when known (never guessed), its licence and whether
commercial use is allowed, and the crop and pixel scaling its inputs need. Cards are validated strictly (an
unknown key is a typo, not an extension) so that a bad card fails at ``list_cards()``, not mid-run.
"""

from __future__ import annotations

import importlib.resources
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

from torch import nn

from synthdb.errors import SynthdbError
from synthdb.nets import adaface, facenet, iresnet, lpips
from synthdb.nets.dlib_resnet import load_dlib_resnet
from synthdb.nets.weights import load_weights

CARDS_PACKAGE = "synthdb.model_cards"


@dataclass(frozen=True)
class ModelCard:
    """One network. ``preset`` is the face crop of the images it reads (embedders, landmarks, detectors) or
    writes (generators); ``image_size`` is their side in pixels, 0 for any size. An embedder's input is
    ``(pixel - pixel_mean) / pixel_std`` for RGB pixels in [0, 255]. ``file`` is relative to the models
    directory, or to the installed ``package`` for embedded weights. ``options`` are keyword arguments for
    the architecture's builder. ``install`` is the command that brings an embedded card's package when it
    differs from a plain ``pip install``. An embedder's ``threshold_rad`` is its verification threshold as
    an angle (same identity below it), with ``threshold_source`` saying where the number comes from: every
    threshold an algorithm or a check needs defaults to it. A generator's ``algorithm_defaults`` are the
    algorithm settings that depend on the scale of its latent space (:data:`ALGORITHM_SETTINGS`), tuned for it
    (see :mod:`synthdb.defaults`)."""

    name: str
    kind: str
    architecture: str
    file: str
    url: str
    sha256: str
    license: str
    commercial_use: bool | str
    embedded: bool
    preset: str
    image_size: int
    notes: str = ""
    package: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    output_dims: int | None = None
    pixel_mean: float | None = None
    pixel_std: float | None = None
    points: int | None = None
    z_dim: int | None = None
    w_dim: int | None = None
    c_dim: int | None = None
    install: str = ""
    algorithm_defaults: Mapping[str, float] = field(default_factory=dict)
    threshold_rad: float | None = None
    threshold_source: str = ""


@dataclass(frozen=True)
class _Embedder:
    build: Callable[..., nn.Module]
    drop_prefixes: tuple[str, ...] = ()


#: Architecture name -> torch builder for every embedder a card may name. dlib's ResNet is not here: its
#: weights are a dlib .dat, parsed by its own loader (see :func:`build_embedder`).
EMBEDDERS: dict[str, _Embedder] = {
    **{f"iresnet{d}": _Embedder(partial(iresnet.IResNet, d)) for d in iresnet.UNITS},
    **{f"adaface_ir{d}": _Embedder(partial(adaface.AdaFaceIR, d)) for d in adaface.UNITS},
    "inception_resnet_v1": _Embedder(facenet.inception_resnet_v1, facenet.HEAD_PREFIXES),
}
DLIB_RESNET = "dlib_resnet"

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "name": str, "kind": str, "architecture": str, "file": str, "url": str, "sha256": str, "license": str,
    "commercial_use": (bool, str), "embedded": bool, "preset": str, "image_size": int,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "notes": str, "package": str, "options": dict, "install": str, "algorithm_defaults": dict,
}
#: Generator-card settings that override the reference's algorithm defaults (which suit StyleGAN's W).
ALGORITHM_SETTINGS = frozenset(
    {"langevin_timestep", "dispersion_latent_radius", "dispersion_global_coefficient"}
)
_BY_KIND: dict[str, dict[str, type | tuple[type, ...]]] = {
    "generator": {"z_dim": int, "w_dim": int, "c_dim": int},
    "embedder": {"output_dims": int, "pixel_mean": (int, float), "pixel_std": (int, float),
                 "threshold_rad": (int, float), "threshold_source": str},
    "detector": {},
    "landmarks": {"points": int},
    "perceptual": {},
}
KINDS = tuple(_BY_KIND)

#: Architecture name -> loader (path, sha256, model) of every perceptual-loss file a card may name: the two
#: halves of LPIPS VGG16 (see :mod:`synthdb.nets.lpips`).
PERCEPTUAL: dict[str, Callable[..., object]] = {"vgg16": lpips.load_vgg16, "lpips_vgg_lin": lpips.load_heads}


def parse_card(text: str, source: str) -> ModelCard:
    """Validate one card's TOML; ``source`` (a file name) only appears in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SynthdbError(f"model card {source} is not valid TOML: {error}") from None

    def bad(problem: str) -> SynthdbError:
        return SynthdbError(f"model card {source}: {problem}")

    kind = data.get("kind")
    if kind not in _BY_KIND:
        raise bad(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    required = {**_REQUIRED, **_BY_KIND[kind]}
    allowed = {**required, **_OPTIONAL}
    if unknown := sorted(set(data) - set(allowed)):
        raise bad(f"unknown keys {', '.join(unknown)} (a {kind} card may have {', '.join(allowed)})")
    if missing := [k for k in required if k not in data]:
        raise bad(f"missing keys {', '.join(missing)}")
    for key, value in data.items():
        numeric = allowed[key] in (int, (int, float))
        if not isinstance(value, allowed[key]) or (numeric and isinstance(value, bool)):
            raise bad(f"{key} = {value!r} has the wrong type")
    if data["commercial_use"] not in (True, False, "unknown"):
        raise bad(f"commercial_use must be true, false or \"unknown\", got {data['commercial_use']!r}")
    if data["sha256"] and not re.fullmatch(r"[0-9a-f]{64}", data["sha256"]):
        raise bad("sha256 must be 64 lowercase hex digits, or empty when unknown")
    if data["url"] and not data["url"].startswith(("https://", "http://")):
        raise bad(f"url must be http(s) or empty, got {data['url']!r}")
    if data["embedded"] != bool(data.get("package")):
        raise bad("embedded cards name the installed package that ships the file, and only they do")
    if kind == "embedder" and data["architecture"] not in {*EMBEDDERS, DLIB_RESNET}:
        raise bad(f"unknown embedder architecture {data['architecture']!r}; known: "
                  f"{', '.join(sorted({*EMBEDDERS, DLIB_RESNET}))}")
    if kind == "perceptual" and data["architecture"] not in PERCEPTUAL:
        raise bad(f"unknown perceptual architecture {data['architecture']!r}; known: {', '.join(PERCEPTUAL)}")
    settings = data.get("algorithm_defaults", {})
    if kind != "generator" and settings:
        raise bad("algorithm_defaults are for generator cards")
    if unknown := sorted(set(settings) - ALGORITHM_SETTINGS):
        raise bad(f"unknown algorithm_defaults {', '.join(unknown)}; "
                  f"known: {', '.join(sorted(ALGORITHM_SETTINGS))}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in settings.values()):
        raise bad("algorithm_defaults must be numbers")
    if kind == "embedder" and not 0 < data["threshold_rad"] <= math.pi:
        raise bad(f"threshold_rad must be an angle in (0, pi] radians, got {data['threshold_rad']!r}")
    floats = {k: float(data[k]) for k in ("pixel_mean", "pixel_std", "threshold_rad") if k in data}
    return ModelCard(**{**data, **floats})


@cache
def _cards() -> dict[str, ModelCard]:
    cards: dict[str, ModelCard] = {}
    for entry in sorted(importlib.resources.files(CARDS_PACKAGE).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        card = parse_card(entry.read_text(encoding="utf-8"), entry.name)
        if card.name in cards:
            raise SynthdbError(f"model card {entry.name}: the name {card.name!r} is already taken")
        cards[card.name] = card
    return cards


def list_cards(kind: str | None = None) -> list[ModelCard]:
    """Every shipped card (optionally of one kind), sorted by name."""
    return sorted((c for c in _cards().values() if kind in (None, c.kind)), key=lambda c: c.name)


def get_card(name: str) -> ModelCard:
    """The card called ``name``; the error lists the known names."""
    try:
        return _cards()[name]
    except KeyError:
        raise SynthdbError(f"unknown model {name!r}; known models: {', '.join(sorted(_cards()))}") from None


def build_embedder(card: ModelCard | str, weights_path: str | Path) -> nn.Module:
    """The card's embedder with the weights in ``weights_path`` (found by :mod:`synthdb.zoo`): frozen (no
    parameter requires grad) and in eval mode. The file's sha256 is checked against the card when the card
    knows it."""
    card = get_card(card) if isinstance(card, str) else card
    if card.kind != "embedder":
        raise SynthdbError(f"{card.name} is a {card.kind}, not an embedder")
    if card.architecture == DLIB_RESNET:
        module = load_dlib_resnet(weights_path)
    else:
        arch = EMBEDDERS[card.architecture]
        module = load_weights(arch.build(**card.options), weights_path, card.sha256 or None,
                              architecture=card.architecture, drop_prefixes=arch.drop_prefixes,
                              model=card.name)
    return module.requires_grad_(False).eval()


def check_perceptual(card: ModelCard, path: str | Path) -> None:
    """Load a perceptual card's file as its architecture: refuses other networks' files with a clear error."""
    PERCEPTUAL[card.architecture](path, card.sha256, model=card.name)
