"""The parameters of a projection run, ``ProjectionParams``: one dataclass shared by the API and
``synthdb project``, kept apart from the algorithm (:mod:`synthdb.latent.project`) so that the command line,
which builds its options from the field specs (:mod:`synthdb.params`), starts without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthdb import defaults
from synthdb.errors import SynthdbError
from synthdb.params import check_fields, choice, count, device_param, non_negative, param

SPACES = ("w", "w+")
PERCEPTUAL = ("lpips", "embedder")


@dataclass
class ProjectionParams:
    """Everything a projection run needs (reference defaults, spec 9.1); stored as the run's params. The
    field specs are also the options of ``synthdb project`` (:mod:`synthdb.params`).

    Targets are ``images`` (files) or the samples of ``dataset``, optionally restricted to the groups
    ``group`` of ``protocols`` (group ``train`` when protocols are given without one; ``all``: every
    group). ``crop``: detect and align photos to the generator's framing first; otherwise targets must be
    aligned already.
    ``perceptual``: ``lpips`` or ``embedder``; None picks one when the run starts (see the module).
    """

    name: str = param(help="Name of the output dataset (shared by re-runs and shards).")
    images: list[str] = param(factory=list, cli=False, help="Aligned face images to project.")
    dataset: str | None = param(None, help="Project the samples of this catalog dataset instead of images.")
    protocols: list[str] = param(
        factory=list, flags=("--protocol",), help="Only members of this protocol (repeatable)."
    )
    group: str | None = param(
        None, help="Protocol group: train (default with --protocol), dev, eval, ... or all."
    )
    generator: str = defaults.generator_param()
    embedder: str = defaults.embedder_param("Embedder whose features are the perceptual loss 'embedder'.")
    perceptual: str | None = choice(
        None,
        PERCEPTUAL,
        help="Perceptual loss: LPIPS VGG16 (needs `synthdb models add` of vgg16-imagenet and lpips-vgg-v0.1) "
        "or the --embedder's features [default: lpips when both files are added, else embedder].",
    )
    space: str = choice("w", SPACES, help="w: one latent per image; w+: one per synthesis layer.")
    steps: int = count(1000, help="Optimisation steps per target.")
    crop: bool = param(
        False, help="Detect and align photos to the generator's framing first (else: already aligned)."
    )
    detector: str = choice(defaults.PROJECTION_DETECTOR, ("dlib", "mtcnn"), help="Face detector of --crop.")
    seed: int = non_negative(0, help="Root seed of every random draw.")
    batch_size: int = count(8, help="Targets optimised together.")
    w_avg_samples: int = param(10000, low=2, cli=False, help="Random z behind the W statistics.")
    start_wavg: bool = param(
        True,
        flags=("--start-wavg/--random-start",),
        help="Start from w_avg, or from a random w (psi --truncation).",
    )
    truncation: float = param(defaults.TRUNCATION, help="Truncation psi of --random-start (1: none).")
    initial_learning_rate: float = param(
        0.1, flags=("--init-lr",), low=0, low_open=True, help="Adam's learning rate before the ramps."
    )
    constant_learning_rate: bool = param(False, flags=("--constant-lr",), help="No learning-rate ramps.")
    lr_rampdown_length: float = param(0.25, cli=False, low=0, low_open=True, help="Ramp-down share of steps.")
    lr_rampup_length: float = param(0.05, cli=False, low=0, low_open=True, help="Ramp-up share of steps.")
    initial_noise_factor: float = non_negative(0.05, cli=False, help="Latent noise at step 0, x sigma_w.")
    noise_ramp_length: float = param(0.75, cli=False, low=0, low_open=True, help="Latent noise ramp.")
    regularize_noise_weight: float = non_negative(
        1e5, flags=("--reg-noise-weight",), help="Weight of the noise images' autocorrelation penalty."
    )
    perceptual_weight: float = non_negative(1.0, help="Weight of the perceptual distance.")
    pixel_weight: float = non_negative(1.0, help="Weight of the pixel MSE (0 drops it, as the reference).")
    video: str | None = param(None, help="Write DIR/<key>.gif: target | synthesis as the optimisation goes.")
    device: str | None = device_param()

    def check(self) -> None:
        """The field specs' ranges and choices (the CLI's rules), then what combines several fields."""
        check_fields(self)
        if bool(self.images) == bool(self.dataset):
            raise SynthdbError("project needs image files or --dataset NAME (one of the two, not both)")
        if (self.protocols or self.group) and not self.dataset:
            raise SynthdbError("--protocol and --group select samples of --dataset: pass --dataset NAME")
        if self.perceptual_weight == 0 and self.pixel_weight == 0:
            raise SynthdbError("--perceptual-weight and --pixel-weight are both 0: nothing to match")
