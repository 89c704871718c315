"""``Generator``: one surface over every GAN generator synthdb drives, and the one place that builds them.

The surface is the reference package's (``mapping``, ``synthesis``, ``w_avg``, ``num_ws``, ``z_dim``,
``w_dim``, ``img_resolution``; images in [-1, 1], (N, 3, H, W)), with its quirks fixed: constant noise by
default, so an image is a function of its latent; no truncation unless asked; frozen weights, so gradients
reach the latents only.

Like timm, architectures (``stylegan2.py``, ...) are separate from how they are obtained. An
:class:`Architecture` says how to build a network from its constructor arguments and how to recognise and
translate an NVIDIA pickle of it; ``Generator.load`` accepts

- the name of a tiny random-initialised configuration (:data:`TINY`, e.g. ``stylegan2-tiny``): untrained,
  built from a fixed seed, for tests, demos and CPU benchmarks, since no face generator ships with synthdb;
- a file: an NVIDIA network pickle (read by :mod:`synthdb.nets.pickles`, never executed), a file written
  by :meth:`Generator.save` or a rosinality/stylegan2-pytorch checkpoint (translated by
  :mod:`synthdb.nets.rosinality`; both ``torch.load(weights_only=True)``);
- (model card names are resolved by :mod:`synthdb.zoo`, which finds their files and calls :meth:`from_file`).

StyleGAN3 and EG3D plug in by adding an :class:`Architecture` to :data:`ARCHITECTURES` (and tiny
configurations to :data:`TINY`); nothing else here is specific to StyleGAN2.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from synthdb.errors import SynthdbError
from synthdb.files import write_atomically
from synthdb.nets import dcgan, eg3d, limits, rosinality, stylegan2, stylegan3
from synthdb.nets.pickles import PickledModule, read_pickled_module
from synthdb.nets.weights import check_tensors, load_torch_file

FILE_FORMAT = "synthdb-generator"
FILE_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
_EXAMPLES = 3


@dataclass(frozen=True)
class Architecture:
    """How to build one architecture, and how to read it from NVIDIA pickles.

    A pickled network is recognised by the class name of its root (``pickle_class``) and a class name
    that only this architecture has below it (``pickle_marker``): NVIDIA's StyleGAN2 and StyleGAN3 roots
    are both called ``Generator``. ``from_pickle`` turns the recorded constructor arguments into ``build``'s.
    ``tiny_init`` fills what a fresh network leaves degenerate (zero noise strengths, zero ``w_avg``) so
    that the tiny configurations exercise every code path.
    """

    name: str
    build: Callable[..., nn.Module]
    #: "" for architectures NVIDIA never pickled (DCGAN): no pickle is ever taken for them
    pickle_class: str = ""
    pickle_marker: str = ""
    from_pickle: Callable[[PickledModule], dict[str, Any]] | None = None
    tiny_init: Callable[[nn.Module], None] | None = None
    synthesis_takes_c: bool = False  # EG3D renders from a camera label; StyleGAN's c only enters mapping
    #: tells apart configurations that share their classes (StyleGAN3 T and R), from the recorded arguments
    pickle_accepts: Callable[[PickledModule], bool] | None = None


@dataclass(frozen=True)
class TinyConfig:
    """A small random-initialised network: real architecture, fixed seed, no training."""

    architecture: str
    kwargs: Mapping[str, Any]
    seed: int
    description: str


# --- StyleGAN2 ----------------------------------------------------------------------------------------------

#: NVIDIA constructor arguments that only choose fp16 blocks, memory formats or grouped vs. plain
#: convolutions: same arithmetic in float32, so synthdb's networks do not take them.
_STYLEGAN2_RUNTIME_ONLY = frozenset(
    {"num_fp16_res", "fp16_channels_last", "channels_last", "fused_modconv_default"}
)


def _stylegan2_from_pickle(record: PickledModule) -> dict[str, Any]:
    """NVIDIA's ``Generator`` constructor arguments -> :class:`~synthdb.nets.stylegan2.StyleGAN2Generator`'s.

    stylegan2-ada-pytorch nests the synthesis arguments in ``synthesis_kwargs`` and defaults
    ``conv_clamp`` to None; the stylegan3 repository passes them flat and defaults it to 256 (as ours does).
    """
    params = list(inspect.signature(stylegan2.StyleGAN2Generator).parameters)
    kwargs = dict(zip(params, record.init_args, strict=False))
    kwargs.update(record.init_kwargs)
    if "synthesis_kwargs" in kwargs:
        kwargs.update(kwargs.pop("synthesis_kwargs") or {})
        kwargs.setdefault("conv_clamp", None)
    for key in _STYLEGAN2_RUNTIME_ONLY:
        kwargs.pop(key, None)
    if unknown := sorted(set(kwargs) - set(params)):
        raise ValueError(f"constructor arguments synthdb's StyleGAN2 does not know: {', '.join(unknown)}")
    return kwargs


def _stylegan2_tiny_init(net: nn.Module) -> None:
    """:func:`~synthdb.nets.stylegan2.liven_fresh_weights`, and ``w_avg`` set to the mean w of 4096
    random z, so truncation pulls towards a real centre."""
    assert isinstance(net, stylegan2.StyleGAN2Generator)
    stylegan2.liven_fresh_weights(net)
    with torch.no_grad():
        z = torch.randn(4096, net.z_dim)
        c = torch.randn(4096, net.c_dim) if net.c_dim else None
        net.mapping.w_avg.copy_(net.mapping(z, c)[:, 0].mean(dim=0))


ARCHITECTURES: dict[str, Architecture] = {
    "stylegan2": Architecture(
        name="stylegan2",
        build=stylegan2.StyleGAN2Generator,
        pickle_class="Generator",
        pickle_marker="SynthesisBlock",
        from_pickle=_stylegan2_from_pickle,
        tiny_init=_stylegan2_tiny_init,
    ),
    "eg3d": Architecture(
        name="eg3d",
        build=eg3d.EG3DGenerator,
        pickle_class="TriPlaneGenerator",
        pickle_marker="OSGDecoder",
        from_pickle=eg3d.kwargs_from_pickle,
        tiny_init=eg3d.tiny_init,
        synthesis_takes_c=True,
    ),
    # One network class, two configurations that model cards tell apart (config R: radial filters, 1x1
    # convolutions); a pickle's config is in its recorded arguments (stylegan3.is_config_r), not its classes.
    "stylegan3-t": Architecture(
        name="stylegan3-t",
        build=stylegan3.StyleGAN3Generator,
        pickle_class="Generator",
        pickle_marker="SynthesisInput",
        from_pickle=stylegan3.kwargs_from_pickle,
        tiny_init=stylegan3.tiny_init,
        pickle_accepts=lambda record: not stylegan3.is_config_r(record),
    ),
    "stylegan3-r": Architecture(
        name="stylegan3-r",
        build=stylegan3.StyleGAN3Generator,
        pickle_class="Generator",
        pickle_marker="SynthesisInput",
        from_pickle=stylegan3.kwargs_from_pickle,
        tiny_init=stylegan3.tiny_init,
        pickle_accepts=stylegan3.is_config_r,
    ),
    # PyTorch's DCGAN tutorial generator (the embedded dcgan-digiface): w is z, one w per image, no noise.
    "dcgan": Architecture(name="dcgan", build=dcgan.DCGANGenerator),
}

TINY: dict[str, TinyConfig] = {
    "stylegan2-tiny": TinyConfig(
        architecture="stylegan2",
        kwargs={
            "z_dim": 512,
            "c_dim": 0,
            "w_dim": 512,
            "img_resolution": 64,
            "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2},
            "channel_base": 2048,
            "channel_max": 64,
        },
        seed=20240501,
        description="stylegan2 64x64, 2 mapping layers, at most 64 channels",
    ),
    "eg3d-tiny": TinyConfig(
        architecture="eg3d",
        kwargs={
            "z_dim": 512,
            "c_dim": 25,
            "w_dim": 512,
            "img_resolution": 64,
            "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2},
            "rendering_kwargs": {
                "depth_resolution": 12,
                "depth_resolution_importance": 12,
                "ray_start": 2.25,
                "ray_end": 3.3,
                "box_warp": 1,
                "c_gen_conditioning_zero": False,
                "c_scale": 1.0,
                "superresolution_noise_mode": "none",
                "sr_antialias": True,
                "avg_camera_radius": 2.7,
                "avg_camera_pivot": [0, 0, 0.2],
            },
            "superresolution": {"input_resolution": 32, "channels": [32, 16], "first_block_up": False},
            "neural_rendering_resolution": 32,
            "backbone_resolution": 32,
            "channel_base": 1024,
            "channel_max": 32,
            "conv_clamp": None,
        },
        seed=20240502,
        description="eg3d 64x64 from 32x32 rays, 12+12 samples per ray, 32x32 tri-planes, <= 32 channels",
    ),
    "stylegan3-tiny": TinyConfig(
        architecture="stylegan3-t",
        kwargs={
            "z_dim": 512,
            "c_dim": 0,
            "w_dim": 512,
            "img_resolution": 64,
            "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2},
            "channel_base": 1024,
            "channel_max": 32,
            "num_layers": 6,
            "margin_size": 2,
        },
        seed=20240503,
        description="stylegan3-t 64x64, 6 layers, 2 margin pixels, at most 32 channels",
    ),
    "stylegan3-r-tiny": TinyConfig(
        architecture="stylegan3-r",
        kwargs={
            "z_dim": 512,
            "c_dim": 0,
            "w_dim": 512,
            "img_resolution": 64,
            "img_channels": 3,
            "mapping_kwargs": {"num_layers": 2},
            "channel_base": 2048,
            "channel_max": 64,
            "num_layers": 6,
            "margin_size": 2,
            "conv_kernel": 1,
            "use_radial_filters": True,
        },
        seed=20240504,
        description="stylegan3-r 64x64, 6 layers, 2 margin pixels, 1x1 convs, radial filters, <= 64 channels",
    ),
}


# --- the Generator ------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """A frozen generator network behind the reference package's API.

    ``name`` is the tiny configuration or model card it came from ("" for a bare file); ``untrained``
    marks random-initialised networks, whose images are not faces and must be labelled as such.
    """

    def __init__(
        self,
        network: nn.Module,
        architecture: str,
        kwargs: Mapping[str, Any],
        name: str = "",
        untrained: bool = False,
    ) -> None:
        super().__init__()
        self.network = network.requires_grad_(False).eval()
        self.architecture = ARCHITECTURES[architecture]
        self.kwargs = dict(kwargs)
        self.name = name
        self.untrained = untrained
        #: how a translated file was read (e.g. where its w_avg came from), for describe(); "" otherwise
        self.origin = ""
        #: the crop preset its images are framed in (its model card's), "" for FFHQ framing at its size
        self.framing = ""

    # attributes of the reference API
    @property
    def z_dim(self) -> int:
        return self.network.z_dim

    @property
    def c_dim(self) -> int:
        return self.network.c_dim

    @property
    def w_dim(self) -> int:
        return self.network.w_dim

    @property
    def num_ws(self) -> int:
        return self.network.num_ws

    @property
    def img_resolution(self) -> int:
        return self.network.img_resolution

    @property
    def w_avg(self) -> Tensor:
        """Centre of the W distribution tracked during training: the target of truncation (EG3D keeps it in
        its StyleGAN2 backbone)."""
        return getattr(self.network, "backbone", self.network).mapping.w_avg

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def describe(self) -> str:
        """One line for logs and CLI output; untrained networks say so."""
        label = self.name or "generator"
        what = (
            TINY[self.name].description
            if self.name in TINY
            else f"{self.architecture.name} {self.img_resolution}x{self.img_resolution}"
        )
        if self.origin:
            what = f"{what}, {self.origin}"
        return (
            f"{label} ({what}, UNTRAINED: random weights, images are not faces)"
            if self.untrained
            else f"{label} ({what})"
        )

    def mapping(
        self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0, w_plus: bool = False
    ) -> Tensor:
        """z (N, z_dim) -> w (N, w_dim), or w+ (N, num_ws, w_dim) with ``w_plus``.

        Truncation is ``w_avg + psi * (w - w_avg)`` on every layer (psi = 1: none). ``c`` (N, c_dim) is
        required by conditional networks and refused by the others; for EG3D it is the camera label the
        identity is conditioned on (:meth:`camera`; a batch of 1 is broadcast to z's).
        """
        self._check(z, (self.z_dim,), "z")
        if self.c_dim:
            c = self._label(c, len(z))
        elif c is not None:
            raise SynthdbError(f"{self.describe()} takes no label c (c_dim = 0): pass c=None")
        ws = self.network.mapping(z, c, truncation_psi=truncation_psi)
        return ws if w_plus else ws[:, 0]

    def synthesis(self, w: Tensor, c: Tensor | None = None, noise_mode: str = "const") -> Tensor:
        """w (N, w_dim) or w+ (N, num_ws, w_dim) -> images (N, 3, H, W) in about [-1, 1], not clamped (a
        clamp would stop gradients). ``noise_mode``: const (default: the same w gives the same image),
        random, or none. ``c`` is used by architectures that render from a camera (EG3D) only: the camera
        label (N or 1, 25) to render from; there, ``random`` also samples the rays at random, as NVIDIA's
        code does, and the other modes sample them deterministically."""
        if self.architecture.synthesis_takes_c:
            return self.render(w, c, noise_mode).image
        return self.network.synthesis(self._w_plus(w, noise_mode), noise_mode=noise_mode)

    def render(self, w: Tensor, c: Tensor | None, noise_mode: str = "const") -> eg3d.Rendering:
        """EG3D: the image, the neural rendering before superresolution and the depth map (distance along
        each ray, (N, 1, r, r) at the neural rendering resolution) of w or w+ seen from cameras c; same
        arguments as :meth:`synthesis`."""
        if not self.architecture.synthesis_takes_c:
            raise SynthdbError(f"{self.describe()} renders no depth: only EG3D generators have render()")
        w = self._w_plus(w, noise_mode)
        return self.network.render(w, self._label(c, len(w)), noise_mode=noise_mode)

    def camera(
        self, fov_deg: float = eg3d.DEFAULT_FOV, pitch_deg: float = 0.0, yaw_deg: float = 0.0
    ) -> Tensor:
        """EG3D: the (1, 25) label of a camera on the network's orbit, ``pitch_deg`` / ``yaw_deg`` from the
        frontal view (pitch > 0 moves the camera down, y being up; yaw > 0 moves it towards +x), on this
        generator's device. The convention is the reference package's (see
        :func:`synthdb.nets.eg3d.camera_label`)."""
        if not self.architecture.synthesis_takes_c:
            raise SynthdbError(f"{self.describe()} has no camera: only EG3D generators take one")
        return self.network.camera(fov_deg, pitch_deg, yaw_deg).to(self.device)

    def _label(self, c: Tensor | None, n: int) -> Tensor:
        """The label c for a batch of ``n``: required, (n or 1, c_dim), broadcast to n rows."""
        if c is None:
            hint = " (a camera label: Generator.camera())" if self.architecture.synthesis_takes_c else ""
            raise SynthdbError(f"{self.describe()} is conditional: pass c with shape (N, {self.c_dim}){hint}")
        self._check(c, (self.c_dim,), "c")
        if len(c) not in (1, n):
            raise SynthdbError(f"c has {len(c)} rows for a batch of {n}: pass 1 or {n}")
        return c.expand(n, -1)

    def _w_plus(self, w: Tensor, noise_mode: str) -> Tensor:
        if noise_mode not in stylegan2.NOISE_MODES:
            raise SynthdbError(
                f"noise_mode must be one of {', '.join(stylegan2.NOISE_MODES)}, got {noise_mode!r}"
            )
        if w.ndim == 2:
            self._check(w, (self.w_dim,), "w")
            w = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        else:
            self._check(w, (self.num_ws, self.w_dim), "w")
        return w

    def forward(
        self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0, noise_mode: str = "const"
    ) -> Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi, w_plus=True), c, noise_mode)

    def _check(self, x: Tensor, row: tuple[int, ...], what: str) -> None:
        if x.ndim != len(row) + 1 or tuple(x.shape[1:]) != row:
            expected = ", ".join(["N", *map(str, row)])
            raise SynthdbError(
                f"{what} has shape {tuple(x.shape)}, but {self.describe()} expects ({expected})"
            )

    # --- files ----------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write architecture, constructor arguments and weights as a torch file that loads with
        ``weights_only=True`` (unlike NVIDIA pickles, it carries no code); atomic (temp file + rename)."""
        path = Path(path)
        payload = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "architecture": self.architecture.name,
            "name": self.name,
            "untrained": self.untrained,
            "kwargs": self.kwargs,
            "state_dict": {k: v.cpu() for k, v in self.network.state_dict().items()},
        }
        try:
            return write_atomically(path, lambda tmp: torch.save(payload, tmp))
        except OSError as error:
            raise SynthdbError(
                f"cannot write {path} ({error.strerror}): check the directory is writable"
            ) from None

    @classmethod
    def tiny(cls, name: str) -> Generator:
        """A tiny configuration, built from its seed (bit-identical every time, global RNG untouched)."""
        config = TINY[name]
        arch = ARCHITECTURES[config.architecture]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            network = arch.build(**config.kwargs)
            if arch.tiny_init is not None:
                arch.tiny_init(network)
        return cls(network, arch.name, config.kwargs, name=name, untrained=True)

    @classmethod
    def load(cls, spec: str | Path) -> Generator:
        """A tiny configuration name or a generator file; model cards are loaded by :func:`synthdb.zoo.load`,
        which knows where a workspace keeps their weights."""
        if isinstance(spec, str) and spec in TINY:
            return cls.tiny(spec)
        if not Path(spec).is_file():
            raise SynthdbError(
                f"no generator file {str(spec)!r}, and not one of {', '.join(TINY)}: pass a file, a tiny "
                "configuration, or load a model card with synthdb.zoo.load"
            )
        return cls.from_file(spec)

    @classmethod
    def from_file(cls, path: str | Path, name: str = "", architecture: str | None = None) -> Generator:
        """An NVIDIA network pickle (its ``G_ema``), a file written by :meth:`save` or a rosinality
        checkpoint (its ``g_ema``); ``name`` (a model card's) overrides the file's, and ``architecture`` is
        what the file must hold (the card's)."""
        path = Path(path)
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
        if head == _ZIP_MAGIC:
            generator = cls._from_saved(path)
            generator.name = name or generator.name
        else:
            record = read_pickled_module(path)
            arch = _detect(record, path)
            try:
                kwargs = arch.from_pickle(record)
                state = record.state_dict()
            except ValueError as error:
                raise SynthdbError(
                    f"{path}: its {record.class_name} cannot be rebuilt ({error}); synthdb "
                    "reads the official NVIDIA releases of this architecture"
                ) from None
            generator = cls(_build(arch, kwargs, state, path), arch.name, kwargs, name=name)
        if architecture is not None and generator.architecture.name != architecture:
            raise SynthdbError(
                f"{path} holds a {generator.architecture.name} network, but {name or 'its card'} "
                f"is a {architecture}: replace the file with the one the card names"
            )
        return generator

    @classmethod
    def _from_saved(cls, path: Path) -> Generator:
        try:
            payload = load_torch_file(path, rosinality.SAFE_GLOBALS)
        except SynthdbError:
            raise
        except Exception as error:  # torch raises many types for bad files; all mean the same to the user
            reason = str(error).split("\n")[0] or type(error).__name__
            raise SynthdbError(
                f"{path} is not a readable synthdb generator file ({reason}): write it with "
                "Generator.save, or pass an NVIDIA network pickle or a rosinality checkpoint"
            ) from None
        if rosinality.is_checkpoint(payload):
            return cls._from_rosinality(payload, path)
        if dcgan.is_checkpoint(payload):
            return cls._from_dcgan(payload, path)
        if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
            raise SynthdbError(
                f"{path} is a torch file but not a synthdb generator (no format = "
                f"{FILE_FORMAT!r}): write it with Generator.save"
            )
        limits.check_saved_file(payload, path)
        if payload.get("version") != FILE_VERSION or payload.get("architecture") not in ARCHITECTURES:
            raise SynthdbError(
                f"{path} is a synthdb generator file of version {payload.get('version')} for "
                f"architecture {payload.get('architecture')!r}, which this synthdb cannot read: "
                "upgrade synthdb"
            )
        arch = ARCHITECTURES[payload["architecture"]]
        network = _build(arch, payload["kwargs"], payload["state_dict"], path)
        return cls(
            network,
            arch.name,
            payload["kwargs"],
            name=payload.get("name", ""),
            untrained=bool(payload.get("untrained", False)),
        )

    @classmethod
    def _from_rosinality(cls, payload: dict[str, Any], path: Path) -> Generator:
        """A rosinality checkpoint's ``g_ema`` as our StyleGAN2; its stored noise becomes the const noise.
        ``w_avg`` is the checkpoint's ``latent_avg``, or else a seeded estimate, and describe() says which."""
        kwargs, state, has_w_avg = rosinality.translate(payload, path)
        arch = ARCHITECTURES["stylegan2"]
        network = _build(arch, kwargs, state, path)
        if not has_w_avg:
            rosinality.estimate_w_avg(network)
        generator = cls(network, arch.name, kwargs)
        generator.origin = "rosinality checkpoint, w_avg " + (
            "from its latent_avg"
            if has_w_avg
            else f"estimated from {rosinality.W_AVG_SAMPLES} seeded z (it has no latent_avg)"
        )
        return generator


    @classmethod
    def _from_dcgan(cls, payload: dict[str, Any], path: Path) -> Generator:
        """A DCGAN tutorial checkpoint's ``netG_state_dict``; its shapes give the constructor arguments."""
        try:
            kwargs, state = dcgan.translate(payload)
        except ValueError as error:
            raise SynthdbError(f"{path}: its DCGAN generator cannot be rebuilt ({error})") from None
        arch = ARCHITECTURES["dcgan"]
        return cls(_build(arch, kwargs, state, path), arch.name, kwargs)


def to_uint8(images: Tensor) -> np.ndarray:
    """Generator images (N, 3, H, W) in [-1, 1] as (N, H, W, 3) uint8, rounded to the nearest level and
    clipped (the reference truncated, so a saved image was not the image of its latent)."""
    pixels = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def _detect(record: PickledModule, path: Path) -> Architecture:
    names = record.class_names()
    pickled = [arch for arch in ARCHITECTURES.values() if arch.pickle_class]
    for arch in pickled:
        if (
            record.class_name == arch.pickle_class
            and arch.pickle_marker in names
            and (arch.pickle_accepts is None or arch.pickle_accepts(record))
        ):
            return arch
    known = ", ".join(f"{a.name} ({a.pickle_class} with {a.pickle_marker})" for a in pickled)
    raise SynthdbError(
        f"{path} holds a {record.class_name} built from {', '.join(sorted(names))}: not an "
        f"architecture synthdb can build yet (known: {known})"
    )


def _build(
    arch: Architecture, kwargs: Mapping[str, Any], state: Mapping[str, Tensor], path: Path
) -> nn.Module:
    """Our network from constructor arguments and a state dict that must fit it exactly.

    The arguments are checked against sane ranges first (:mod:`synthdb.nets.limits`) and the tensors' bytes
    against the file's size; the network is then built on the meta device (no time spent on random init
    that would be overwritten), and the file's tensors are assigned to it.
    """
    limits.check_arguments(arch.name, kwargs, path)
    check_tensors(path, state.items())
    try:
        with torch.device("meta"):
            network = arch.build(**kwargs)
    except (TypeError, ValueError, ArithmeticError) as error:
        raise SynthdbError(
            f"{path}: cannot build {arch.name} from its arguments ({error}); the file is "
            "damaged or from an unsupported release"
        ) from None
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:

        def some(names: list[str]) -> str:
            return ", ".join(names[:_EXAMPLES]) or "-"

        raise SynthdbError(
            f"{path} does not fit {arch.name}: {len(missing)} missing ({some(missing)}), {len(unexpected)} "
            f"unexpected ({some(unexpected)}) and {len(wrong)} misshapen tensors ({some(wrong)}): the file "
            "is damaged or from an unsupported release"
        )
    network.load_state_dict({k: state[k].to(v.dtype) for k, v in expected.items()}, assign=True)
    return network
