"""The one source of the defaults that depend on which networks are used.

synthdb works out of the box with networks that ship inside Python packages: the trained ``dcgan-digiface``
face generator and the ``dlib-resnet`` embedder. Thresholds are properties of an embedder, not of the
algorithms: an angle that separates identities under an ArcFace IResNet (the reference's ICT, 1.4 rad)
merges every pair of people under dlib's ResNet (same person below 0.609 rad). So every threshold an
algorithm, a check or a plot needs defaults to the embedder card's ``threshold_rad``, and settings that
depend on the scale of a generator's latent space (Langevin's step, Dispersion's latent radius) come from the
generator card's ``algorithm_defaults``. An explicit value always wins; a run stores the values it resolved,
so resuming it never depends on these defaults changing. Importing this module is cheap (the CLI reads
its names at start-up); the cards are read when a value is asked for.
"""

from __future__ import annotations

from typing import Any

from synthdb.errors import SynthdbError
from synthdb.params import param

#: The embedded generator and embedder: no download needed.
GENERATOR = "dcgan-digiface"
EMBEDDER = "dlib-resnet"
#: The face detector for photos (``synthdb embed``, exports that crop genuine images); projection aligns its
#: targets the reference's way, with dlib's landmarks (FFHQ alignment was defined on them).
DETECTOR = "mtcnn"
PROJECTION_DETECTOR = "dlib"
#: Truncation psi of latents drawn from seeds (references, images, projection's random start).
TRUNCATION = 0.7

#: The reference's Langevin repulsion radius over its ICT (1.7 / 1.4 rad for ArcFace IResNets): pairs closer
#: than r0 repel, so r0 sits a little above the threshold the run should clear.
RADIUS_OVER_THRESHOLD = 1.7 / 1.4


def threshold(embedder: str) -> float:
    """The embedder card's verification threshold, radians (same identity below it)."""
    from synthdb.nets.cards import get_card, list_cards  # torch and every network: only when needed

    if embedder not in {card.name for card in list_cards()}:
        raise SynthdbError(
            f"{embedder} has no model card, so synthdb knows no verification threshold for it: "
            "pass one in radians (--ict / --threshold)"
        )
    card = get_card(embedder)
    if card.threshold_rad is None:
        raise SynthdbError(f"{embedder} is a {card.kind}, not an embedder: it has no verification threshold")
    return card.threshold_rad


def repulsion_radius(embedder: str) -> float:
    """Langevin's default r0 for this embedder, radians."""
    return threshold(embedder) * RADIUS_OVER_THRESHOLD


def generator_setting(generator: str, key: str, fallback: float) -> float:
    """An algorithm setting tuned for a generator card's latent space, else ``fallback`` (the reference's
    value, tuned for StyleGAN's W); tiny configurations and bare files have no card."""
    from synthdb.nets.cards import list_cards

    cards = {card.name: card for card in list_cards("generator")}
    card = cards.get(generator)
    return float(card.algorithm_defaults.get(key, fallback)) if card is not None else fallback


def device(requested: str | None = None) -> str:
    """The torch device a job runs on: the one asked for, else ``cuda`` when torch sees a GPU, else ``cpu``
    (every command's ``--device`` defaults to this, so a job runs where it would run fastest)."""
    if requested:
        return requested
    import torch  # only when a job needs a device

    return "cuda" if torch.cuda.is_available() else "cpu"


def generator_param() -> Any:
    """The ``generator`` field of every job that draws images: default :data:`GENERATOR`."""
    return param(
        GENERATOR,
        help="Generator: a model card (dcgan-digiface is embedded, trained on DigiFace-1M), a file, or a "
        "tiny configuration (stylegan2-tiny... are UNTRAINED: their images are not faces).",
    )


def embedder_param(
    help: str = "Face embedder (a model card): its threshold is every threshold's default.",
) -> Any:
    """The ``embedder`` field of every job that embeds: default :data:`EMBEDDER`."""
    return param(EMBEDDER, help=help)
