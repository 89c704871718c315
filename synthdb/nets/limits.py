"""Sane ranges for the constructor arguments a generator file records, checked before anything is built.

A generator file names the arguments synthdb builds its network from: NVIDIA pickles record
``_init_kwargs``, synthdb files carry ``kwargs``, checkpoints are translated into them. The network is
built on the meta device, which costs no tensor memory, but Python still creates every module, and
StyleGAN3 designs every filter on the CPU: ``num_layers=300000`` or ``filter_size=20000`` in a kilobyte of
pickle would take minutes and gigabytes before the state dict could refuse them, and a resolution of
``2**4000`` or ``-1`` would end in a traceback. So every argument is checked first, by type and against a
range that covers every published network with a wide margin (:data:`MAX_RESOLUTION`, :data:`MAX_WIDTH`,
...), and the arguments that interact (StyleGAN3's layer schedule, EG3D's rays times samples) are checked
together. What the ranges allow is then bounded by the state dict: every parameter of the built network must
be a tensor of the file (:func:`synthdb.nets.weights.check_tensors` bounds their bytes by the file's size).

An argument out of range is one :class:`~synthdb.errors.SynthdbError` line naming the file, the argument, its
value and the range. Architectures without a table here (a new one) get :func:`plain_data`: small numbers,
short strings and small containers only.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from synthdb.errors import SynthdbError
from synthdb.nets import stylegan2, stylegan3
from synthdb.nets.unpickler import describe

MAX_RESOLUTION = 4096
"""Image, plane and block resolutions. NVIDIA's largest generators are 1024 px."""
MAX_WIDTH = 4096
"""Channels, latent and label sizes. NVIDIA's widest layers have 1024 channels (StyleGAN3-R), latents 512."""
MAX_CHANNEL_BASE = 1 << 20
"""``channel_base`` (channels times resolution; widths are capped by ``channel_max``). NVIDIA uses 65536."""
MAX_IMAGE_CHANNELS = 128
"""Output channels of a generator (3; EG3D's backbone writes 96 feature planes)."""
MAX_MAPPING_LAYERS = 32
"""Mapping network depth. StyleGAN2 has 8, StyleGAN3 and EG3D 2."""
MAX_SYNTHESIS_LAYERS = 64
"""StyleGAN3 synthesis layers. The released networks have 14."""
MAX_FILTER_TAPS = 256
"""Taps of one StyleGAN3 resampling filter (``filter_size`` times the rate change; radial filters square it).
The released networks use at most 24."""
MAX_RAY_SAMPLES = 1 << 24
"""EG3D rays times samples per ray in one rendering: memory per image grows with it. FFHQ 512: 128^2 x 96."""
MAX_PLAIN_ITEMS = 64
"""Items of a list or dict in an argument no table describes."""
MAX_PLAIN_INT = 1 << 16
"""Integers in an argument no table describes (sizes of a new architecture, unknown options)."""

Rule = Callable[[Any, str], None]
"""Checks ``value`` (the argument named by the second parameter) and raises :class:`OutOfRange`."""


class OutOfRange(ValueError):
    """An argument outside what synthdb builds: ``name = value, expected ...``."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        super().__init__(f"{name} = {describe(value)}, expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int, high: int) -> Rule:
    def rule(value: Any, name: str) -> None:
        if not (_is_int(value) and low <= value <= high):
            raise OutOfRange(name, value, f"an integer in [{low}, {high}]")

    return rule


def power_of_two(low: int, high: int) -> Rule:
    def rule(value: Any, name: str) -> None:
        if not (_is_int(value) and low <= value <= high and value & (value - 1) == 0):
            raise OutOfRange(name, value, f"a power of two in [{low}, {high}]")

    return rule


def real(low: float, high: float) -> Rule:
    def rule(value: Any, name: str) -> None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and low <= value <= high):
            raise OutOfRange(name, value, f"a number in [{low:g}, {high:g}]")

    return rule


def one_of(*choices: str) -> Rule:
    def rule(value: Any, name: str) -> None:
        if not (isinstance(value, str) and value in choices):
            raise OutOfRange(name, value, f"one of {', '.join(choices)}")

    return rule


def text(longest: int) -> Rule:
    def rule(value: Any, name: str) -> None:
        if not (isinstance(value, str) and len(value) <= longest and value.isprintable()):
            raise OutOfRange(name, value, f"a printable string of at most {longest} characters")

    return rule


def flag(value: Any, name: str) -> None:
    if not (isinstance(value, bool) or _is_int(value) and value in (0, 1)):
        raise OutOfRange(name, value, "a boolean")


def optional(rule: Rule) -> Rule:
    def check(value: Any, name: str) -> None:
        if value is not None:
            rule(value, name)

    return check


def either(first: Rule, second: Rule) -> Rule:
    def rule(value: Any, name: str) -> None:
        try:
            first(value, name)
        except OutOfRange:
            second(value, name)

    return rule


def sequence(item: Rule, low: int, high: int) -> Rule:
    def rule(value: Any, name: str) -> None:
        if not (isinstance(value, list | tuple) and low <= len(value) <= high):
            raise OutOfRange(name, value, f"a list of {low} to {high} items")
        for index, element in enumerate(value):
            item(element, f"{name}[{index}]")

    return rule


def table(rules: Mapping[str, Rule], others: Rule | None = None) -> Rule:
    """A dict of named arguments: each known one checked by its rule, the others by ``others`` or refused."""

    def rule(value: Any, name: str) -> None:
        if not isinstance(value, Mapping):
            raise OutOfRange(name or "the arguments", value, "a dict of named arguments")
        for key, element in value.items():
            if not isinstance(key, str) or not key.isprintable() or len(key) > 256:
                raise OutOfRange(f"{name}[{describe(key)}]", element, "an argument named by a short string")
            check = rules.get(key, others)
            if check is None:
                raise OutOfRange(f"{name}.{key}".lstrip("."), element, "no such argument")
            check(element, f"{name}.{key}".lstrip("."))

    return rule


def plain_data(value: Any, name: str, depth: int = 0) -> None:
    """What an argument no table knows may be: numbers up to :data:`MAX_PLAIN_INT`, short strings, None,
    booleans, and lists or dicts of them up to :data:`MAX_PLAIN_ITEMS` items and 4 levels."""
    if value is None or isinstance(value, bool) or isinstance(value, str) and len(value) <= 256:
        return
    if isinstance(value, int | float):
        real(-MAX_PLAIN_INT, MAX_PLAIN_INT)(value, name)
        return
    container = isinstance(value, Mapping | list | tuple)
    if not container or len(value) > MAX_PLAIN_ITEMS or depth >= 4:
        raise OutOfRange(name, value, f"plain data (numbers, short strings, up to {MAX_PLAIN_ITEMS} items)")
    for key, element in value.items() if isinstance(value, Mapping) else enumerate(value):
        plain_data(element, f"{name}[{describe(key)}]", depth + 1)


# --- the architectures --------------------------------------------------------------------------------------

_WIDTH = integer(1, MAX_WIDTH)
_MAPPING = table(
    {
        "num_layers": integer(1, MAX_MAPPING_LAYERS),
        "embed_features": optional(_WIDTH),
        "layer_features": optional(_WIDTH),
        "activation": one_of(*stylegan2.ACTIVATIONS),
        "lr_multiplier": real(1e-6, 1e6),
        "w_avg_beta": optional(real(0, 1)),
    }
)
_LATENTS: Mapping[str, Rule] = {
    "z_dim": integer(0, MAX_WIDTH),
    "c_dim": integer(0, MAX_WIDTH),
    "w_dim": _WIDTH,
    "img_resolution": power_of_two(4, MAX_RESOLUTION),
    "img_channels": integer(1, MAX_IMAGE_CHANNELS),
    "mapping_kwargs": optional(_MAPPING),
    "channel_base": integer(1, MAX_CHANNEL_BASE),
    "channel_max": _WIDTH,
    "conv_clamp": optional(real(0, 1e9)),
}
#: StyleGAN2's synthesis options, which EG3D passes to its backbone too
_STYLEGAN2_SYNTHESIS: Mapping[str, Rule] = {
    "architecture": one_of(*stylegan2.ARCHITECTURES),
    "resample_filter": sequence(real(-1e6, 1e6), 1, 16),
    "kernel_size": integer(1, 15),
    "use_noise": flag,
    "activation": one_of(*stylegan2.ACTIVATIONS),
}
_RENDERING = table(
    {
        "depth_resolution": integer(1, 4096),
        "depth_resolution_importance": integer(0, 4096),
        "ray_start": either(one_of("auto"), real(-1e6, 1e6)),
        "ray_end": either(one_of("auto"), real(-1e6, 1e6)),
        "box_warp": real(1e-6, 1e6),
        "disparity_space_sampling": flag,
        "white_back": flag,
        "clamp_mode": one_of("softplus"),
        "c_gen_conditioning_zero": flag,
        "c_scale": real(-1e6, 1e6),
        "superresolution_noise_mode": one_of(*stylegan2.NOISE_MODES),
        "sr_antialias": flag,
        "decoder_lr_mul": real(1e-6, 1e6),
        "avg_camera_radius": real(-1e6, 1e6),
        "avg_camera_pivot": sequence(real(-1e6, 1e6), 3, 3),
    },
    others=plain_data,  # training-only options (density regularisation, ...) are kept and ignored
)
_SUPERRESOLUTION = table(
    {
        "input_resolution": integer(1, MAX_RESOLUTION),
        "channels": sequence(_WIDTH, 2, 2),
        "first_block_up": flag,
        "filter_buffer": flag,
        "resize_only_smaller": flag,
        "conv_clamp": optional(real(0, 1e9)),
    }
)

#: StyleGAN3's defaults, and the arguments of its layer schedule (from which the filter taps follow)
_STYLEGAN3_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(stylegan3.StyleGAN3Generator).parameters.items()
}
_SCHEDULE_ARGUMENTS = (
    "img_resolution",
    "img_channels",
    "channel_base",
    "channel_max",
    "num_layers",
    "num_critical",
    "first_cutoff",
    "first_stopband",
    "last_stopband_rel",
    "margin_size",
)
_STYLEGAN3 = table(
    {
        **_LATENTS,
        "num_layers": integer(1, MAX_SYNTHESIS_LAYERS),
        "num_critical": integer(0, MAX_SYNTHESIS_LAYERS),
        "first_cutoff": real(1e-3, MAX_RESOLUTION),
        "first_stopband": real(0.5, 2 * MAX_RESOLUTION),
        "last_stopband_rel": real(0.5, 64),
        "margin_size": integer(0, 256),
        "output_scale": real(-1e6, 1e6),
        "conv_kernel": integer(1, 15),
        "filter_size": integer(1, 64),
        "lrelu_upsampling": integer(1, 8),
        "use_radial_filters": flag,
    }
)


def _stylegan2_widths(kwargs: Mapping[str, Any], resolution: int) -> None:
    """Every block has channels (``channel_base // res`` > 0) and the mapping has an input."""
    if kwargs.get("channel_base", 32768) < resolution:
        expected = f"at least the resolution ({resolution})"
        raise OutOfRange("channel_base", kwargs.get("channel_base"), expected)
    if kwargs.get("z_dim", 0) + kwargs.get("c_dim", 0) == 0:
        raise OutOfRange("z_dim", kwargs.get("z_dim"), "at least 1 when c_dim is 0")


def _stylegan3_schedule(kwargs: Mapping[str, Any]) -> None:
    """The alias-free schedule the arguments give: every layer has channels, and no resampling filter has
    more than :data:`MAX_FILTER_TAPS` taps (its rate change times ``filter_size``)."""
    args = {**_STYLEGAN3_DEFAULTS, **kwargs}
    if any(args[name] is inspect.Parameter.empty for name in _SCHEDULE_ARGUMENTS):
        return  # building refuses the missing argument
    if not args["num_critical"] < args["num_layers"]:
        raise OutOfRange("num_critical", args["num_critical"], f"less than num_layers ({args['num_layers']})")
    specs = stylegan3.layer_schedule(*(args[name] for name in _SCHEDULE_ARGUMENTS))
    for index, spec in enumerate(specs):
        if spec.in_channels < 1 or spec.out_channels < 1:
            expected = f"enough for layer {index} to have channels"
            raise OutOfRange("channel_base", args["channel_base"], expected)
        if spec.is_torgb:
            continue
        rate = max(spec.in_sampling_rate, spec.out_sampling_rate) * args["lrelu_upsampling"]
        taps = args["filter_size"] * rate // min(spec.in_sampling_rate, spec.out_sampling_rate)
        if taps > MAX_FILTER_TAPS:
            expected = f"at most {MAX_FILTER_TAPS} taps per filter (layer {index} has {taps})"
            raise OutOfRange("filter_size", args["filter_size"], expected)


def _eg3d_rays(kwargs: Mapping[str, Any]) -> None:
    """One rendering's rays times samples, which its memory grows with."""
    options = kwargs.get("rendering_kwargs") or {}
    samples = options.get("depth_resolution", 1) + options.get("depth_resolution_importance", 0)
    rays = kwargs.get("neural_rendering_resolution", 64) ** 2
    if rays * samples > MAX_RAY_SAMPLES:
        expected = f"at most {MAX_RAY_SAMPLES:,} ray samples per image ({samples} per ray)"
        raise OutOfRange("neural_rendering_resolution", kwargs.get("neural_rendering_resolution"), expected)
    _stylegan2_widths(kwargs, kwargs.get("backbone_resolution", 256))


def _dcgan_widths(kwargs: Mapping[str, Any]) -> None:
    widest = kwargs.get("ngf", 64) * 2 ** (kwargs.get("num_layers", 5) - 2)
    if widest > MAX_WIDTH:
        expected = f"a widest layer of at most {MAX_WIDTH} channels (not {widest})"
        raise OutOfRange("ngf", kwargs.get("ngf"), expected)


#: architecture -> (rule for its constructor arguments, checks of arguments together after the rule passed)
ARGUMENTS: Mapping[str, tuple[Rule, Callable[[Mapping[str, Any]], None]]] = {
    "stylegan2": (
        table({**_LATENTS, **_STYLEGAN2_SYNTHESIS}),
        lambda kwargs: _stylegan2_widths(kwargs, kwargs.get("img_resolution", 0)),
    ),
    "eg3d": (
        table(
            {
                **_LATENTS,
                **_STYLEGAN2_SYNTHESIS,
                "img_channels": integer(3, 3),
                "rendering_kwargs": optional(_RENDERING),
                "superresolution": _SUPERRESOLUTION,
                "neural_rendering_resolution": integer(1, MAX_RESOLUTION),
                "backbone_resolution": power_of_two(4, MAX_RESOLUTION),
            }
        ),
        _eg3d_rays,
    ),
    "stylegan3-t": (_STYLEGAN3, _stylegan3_schedule),
    "stylegan3-r": (_STYLEGAN3, _stylegan3_schedule),
    "dcgan": (
        table(
            {
                "z_dim": _WIDTH,
                "ngf": _WIDTH,
                "img_channels": integer(1, MAX_IMAGE_CHANNELS),
                "num_layers": integer(2, 11),  # 4 * 2**10 = 4096 px
            }
        ),
        _dcgan_widths,
    ),
}


def check_arguments(architecture: str, kwargs: Mapping[str, Any], path: Path) -> None:
    """Refuse constructor arguments outside what synthdb builds, before anything is built."""
    rule, together = ARGUMENTS.get(architecture, (table({}, others=plain_data), lambda kwargs: None))
    try:
        rule(kwargs, "")
        together(kwargs)
    except OutOfRange as error:
        raise SynthdbError(
            f"{path}: its {architecture} argument {error}: the file is damaged or crafted (synthdb builds "
            "the published networks and smaller ones; the ranges are in synthdb.nets.limits)"
        ) from None


def _mapping(value: Any, name: str) -> None:
    if not isinstance(value, Mapping):
        raise OutOfRange(name, value, "a dict")


def _state_dict(value: Any, name: str) -> None:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()
    ):
        raise OutOfRange(name, value, "a dict of named tensors")


#: what :meth:`~synthdb.nets.generator.Generator.save` writes (keys of later versions are left alone)
SAVED_FILE = table(
    {
        "format": text(64),
        "version": integer(0, 2**31),
        "architecture": text(64),
        "name": text(256),
        "untrained": flag,
        "kwargs": _mapping,
        "state_dict": _state_dict,
    },
    others=lambda value, name: None,
)


def check_saved_file(payload: Mapping[str, Any], path: Path) -> None:
    """Refuse a synthdb generator file whose header is not what Generator.save writes, before its values
    are printed, looked up or built from (a 4,000-digit version, a list as the architecture's name)."""
    try:
        SAVED_FILE(payload, "")
        missing = [key for key in ("kwargs", "state_dict") if key not in payload]
        if missing:
            raise OutOfRange(missing[0], None, "a dict")
    except OutOfRange as error:
        raise SynthdbError(
            f"{path}: its {error}: the synthdb generator file is damaged or crafted; write it again with "
            "Generator.save"
        ) from None
