"""StyleGAN3 generator (Karras et al. 2021, "Alias-Free GANs"; configs T and R) in plain torch.

Module tree, parameter and buffer names, shapes and registration order follow NVIDIA's ``G_ema``
(``training/networks_stylegan3.py`` of the stylegan3 repository), so an official state dict loads 1:1;
``tests/data`` holds the key lists of the full-size T and R networks and golden outputs of the official code
that this file reproduces.

The network: a mapping network (StyleGAN2's, reused: same structure and names, two layers by default), an
input layer of Fourier features whose frequencies are rotated and translated per sample by an affine of w,
then ``num_layers`` modulated convolutions, each followed by a *filtered* leaky ReLU: upsample (Kaiser
low-pass), leaky ReLU at the higher rate, low-pass and downsample. Cutoffs, stopbands, sampling rates and
channel counts follow a geometric schedule from the first layer to the image (:func:`layer_schedule`). The
last layer is a 1x1 ToRGB without demodulation. Config R differs by its arguments only: 1x1 convolutions,
twice the channels, radially symmetric (jinc) downsampling filters.

What differs from NVIDIA's code, on purpose:
- no custom CUDA kernels: the filtered leaky ReLU is bias, zero-insertion upsampling by strided transposed
  convolution, activation, strided filtering; ordinary torch ops that run anywhere torch runs, under
  autocast and autograd;
- the low-pass filters are designed here (Kaiser-windowed sinc / jinc, numpy + ``torch.special``) to the
  same numbers as NVIDIA's scipy calls, so scipy is not needed;
- modulation scales activations (input channels) and demodulation scales outputs, instead of building
  per-sample weights for a grouped convolution: the same arithmetic as a plain batched convolution;
- the style pre-normalisation that keeps fp16 in range is per sample, not over the batch: demodulation
  cancels it up to its 1e-8 epsilon either way, and per sample an image depends on its own w only, so a
  batch gives exactly the images of its rows;
- no training machinery (w_avg and magnitude EMAs are loaded, never updated) and no fp16 switches.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthdb.nets.pickles import PickledModule
from synthdb.nets.stylegan2 import NOISE_MODES, FullyConnectedLayer, MappingNetwork, NoiseMode

# --- filter design ------------------------------------------------------------------------------------------


def kaiser_beta(numtaps: int, width: float) -> float:
    """Kaiser window shape for a filter of ``numtaps`` taps and transition ``width`` (a fraction of Nyquist).

    Kaiser's empirical formulas: the stopband attenuation such a filter reaches (dB), then the window
    parameter that gives it; the same formulas scipy's ``kaiser_atten`` / ``kaiser_beta`` implement.
    """
    atten = 2.285 * (numtaps - 1) * math.pi * width + 7.95
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> Tensor | None:
    """The low-pass filter stored in NVIDIA's ``up_filter`` / ``down_filter`` buffers (float32).

    One tap means identity (None, no buffer). Otherwise a separable 1-D Kaiser-windowed sinc with cutoff
    ``cutoff`` at sampling rate ``fs`` and transition band ``width`` (scipy ``firwin``'s design: unit DC
    gain), or, with ``radial``, a 2-D jinc (the rotation-invariant ideal low-pass) under the outer product
    of the same Kaiser window, normalised to unit sum.
    """
    if numtaps < 1:
        raise ValueError(f"a filter needs at least one tap, got {numtaps}")
    if numtaps == 1:
        return None
    window = np.kaiser(numtaps, kaiser_beta(numtaps, width / (fs / 2)))
    if not radial:
        taps = np.sinc(2 * cutoff / fs * (np.arange(numtaps) - (numtaps - 1) / 2)) * window
        return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = torch.as_tensor(np.hypot(*np.meshgrid(x, x)), dtype=torch.float64, device="cpu")
    # jinc(r) = J1(2 pi fc r) / (pi r), whose limit at r = 0 is fc (only reached with an odd tap count).
    safe = torch.where(r > 0, r, 1.0)
    jinc = torch.where(r > 0, torch.special.bessel_j1(2 * math.pi * cutoff * safe) / (math.pi * safe), cutoff)
    taps = jinc.numpy() * np.outer(window, window)
    return torch.as_tensor(taps / taps.sum(), dtype=torch.float32)


# --- ops ----------------------------------------------------------------------------------------------------


def upsample_filter(
    x: Tensor, f: Tensor | None, up: int, padding: tuple[int, int, int, int], gain: float = 1.0
) -> Tensor:
    """Insert ``up - 1`` zeros after every sample, pad by ``padding`` = (x0, x1, y0, y1) (negative crops) and
    convolve (true convolution, only fully overlapped outputs) with the separable 1-D filter ``f`` on both
    axes, times ``gain``: NVIDIA's ``upfirdn2d`` with ``up``.

    Each axis is one strided depthwise transposed convolution, which is that convolution evaluated without
    touching the inserted zeros; one final pad re-expresses ``padding`` relative to its full output. Same
    arithmetic as :func:`synthdb.nets.stylegan2.upfirdn2d`, with one copy of the large upsampled tensor
    instead of two.
    """
    channels = x.shape[1]
    f = (torch.ones(1, device=x.device) if f is None else f).to(x.dtype) * math.sqrt(gain)
    taps = f.numel()
    x = F.conv_transpose2d(
        x, f.reshape(1, 1, 1, taps).expand(channels, 1, 1, taps), stride=(1, up), groups=channels
    )
    x = F.conv_transpose2d(
        x, f.reshape(1, 1, taps, 1).expand(channels, 1, taps, 1), stride=(up, 1), groups=channels
    )
    x0, x1, y0, y1 = padding
    return F.pad(x, [x0 - taps + 1, x1 + up - taps, y0 - taps + 1, y1 + up - taps])


def filter_downsample(x: Tensor, f: Tensor | None, down: int) -> Tensor:
    """Convolve with ``f`` (1-D separable or 2-D; true convolution, only fully overlapped outputs) and keep
    every ``down``-th sample from the first, as one strided depthwise convolution per pass."""
    if f is None:
        return x[:, :, ::down, ::down]
    channels = x.shape[1]
    f = f.to(x.dtype).flip(list(range(f.ndim)))
    if f.ndim == 2:
        return F.conv2d(x, f[None, None].expand(channels, 1, *f.shape), stride=down, groups=channels)
    taps = f.numel()
    x = F.conv2d(x, f.reshape(1, 1, 1, taps).expand(channels, 1, 1, taps), stride=(1, down), groups=channels)
    return F.conv2d(
        x, f.reshape(1, 1, taps, 1).expand(channels, 1, taps, 1), stride=(down, 1), groups=channels
    )


def filtered_lrelu(
    x: Tensor,
    fu: Tensor | None,
    fd: Tensor | None,
    b: Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> Tensor:
    """Bias, upsample by ``up`` with ``fu`` (``padding`` = (x0, x1, y0, y1) on the upsampled signal),
    ``leaky_relu(slope) * gain``, clamp to [-clamp, clamp], filter with ``fd`` and downsample by ``down``.

    The nonlinearity runs at the higher rate and between two low-pass filters, so the harmonics it creates
    above the output's Nyquist frequency are removed before they alias: the core of StyleGAN3. Filters
    that are None are identities (ToRGB: bias and clamp only). On the large upsampled tensor there are two
    passes only: ``gain`` (positive) rides on the upsampling filter, and the clamp is applied before the
    (monotonic) activation, at the bounds that map to +-clamp, so the activation can run in place.
    """
    x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    if fu is not None or up != 1 or any(padding):
        x = upsample_filter(x, fu, up, padding, gain=up * up * gain)
    elif gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp / slope, clamp)
    if slope != 1:
        x = F.leaky_relu(x, slope, inplace=True)
    if fd is not None or down != 1:
        x = filter_downsample(x, fd, down)
    return x


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    padding: int,
    demodulate: bool = True,
    input_gain: Tensor | None = None,
) -> Tensor:
    """StyleGAN3's modulated convolution on activations: ``conv(x * s * input_gain, w) * d``.

    With ``demodulate``, weight rows and each sample's styles are first brought to unit mean square (which
    the demodulation coefficients ``d[n, o] = rsqrt(sum_i s[n, i]^2 sum_k w[o, i, k]^2 + 1e-8)`` then undo
    exactly, up to the epsilon); ``input_gain`` is the layer's inverse input RMS tracked in training.
    """
    n = x.shape[0]
    dcoefs = None
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
    if input_gain is not None:
        styles = styles * input_gain
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    x = F.conv2d(x, weight.to(x.dtype), padding=padding)
    if dcoefs is not None:
        x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
    return x


# --- layers -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer's place in the alias-free schedule (index ``num_layers`` is the ToRGB)."""

    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    is_torgb: bool
    is_critically_sampled: bool


def layer_schedule(
    img_resolution: int,
    img_channels: int,
    channel_base: int,
    channel_max: int,
    num_layers: int,
    num_critical: int,
    first_cutoff: float,
    first_stopband: float,
    last_stopband_rel: float,
    margin_size: int,
) -> list[LayerSpec]:
    """Input and output specification of layer 0 .. ``num_layers`` (paper, section 3.2 and appendix F).

    Cutoff f_c and minimum stopband f_t grow geometrically from the first layer to the last
    ``num_critical`` layers, which sit at the image's Nyquist frequency. Each layer samples at the smallest
    power of two above twice its stopband (capped at the image resolution), plus ``margin_size`` pixels on
    each side except the last two; the transition half-width f_h fills the gap between cutoff and the
    larger of stopband and Nyquist. Channels fall with the cutoff. Float64 numpy, in the same order of
    operations as NVIDIA's code: these numbers design the filters, so they must match to the last bit.
    """
    if num_layers <= num_critical:
        raise ValueError(f"num_layers ({num_layers}) must exceed num_critical ({num_critical})")
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    specs = []
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        specs.append(
            LayerSpec(
                in_channels=int(channels[prev]),
                out_channels=int(channels[idx]),
                in_size=int(sizes[prev]),
                out_size=int(sizes[idx]),
                in_sampling_rate=int(rates[prev]),
                out_sampling_rate=int(rates[idx]),
                in_cutoff=float(cutoffs[prev]),
                out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]),
                out_half_width=float(half_widths[idx]),
                is_torgb=idx == num_layers,
                is_critically_sampled=idx >= num_layers - num_critical,
            )
        )
    return specs


class SynthesisInput(nn.Module):
    """Fourier features: ``channels`` sinusoids with fixed random frequencies inside a disc of radius
    ``bandwidth``, sampled on a ``size`` x ``size`` grid at ``sampling_rate``, then mixed by a learned
    matrix. An affine of w rotates and translates the features (the image's pose), and ``transform`` is a
    user-set extra transform (identity in trained networks)."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = size
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth
        # Frequencies uniform in the disc (radial density shaped by exp(-r^2/4)), phases uniform: only the
        # init of a fresh network, since trained values are loaded into the buffers.
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # start as the identity pose: rotation (cos, sin) = (1, 0), no translation
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: Tensor) -> Tensor:
        """w [N, w_dim] -> features [N, channels, size, size]."""
        n = w.shape[0]
        t = self.affine(w)  # (cos, sin, tx, ty) up to scale: rotation from the unit vector, then translation
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        rotate = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=1).reshape(n, 3, 3)
        translate = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).reshape(n, 3, 3)
        transforms = rotate @ translate @ self.transform.unsqueeze(0)
        # A transform of the image is the inverse transform of the coordinates: phases absorb the shift.
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]
        # Fade frequencies a user transform pushed past the bandwidth, to zero at Nyquist.
        amplitudes = 1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)
        amplitudes = amplitudes.clamp(0, 1)
        # Pixel centres in units of the sampling period, centred on the image: (i + 1/2 - size/2) / rate.
        coords = (
            torch.arange(self.size, device=w.device, dtype=torch.float32) + 0.5 - self.size / 2
        ) / float(self.sampling_rate)
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=-1)  # [H, W, (x, y)]
        x = torch.einsum("hwk,nck->nhwc", grid, freqs) + phases[:, None, None, :]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    """Modulated convolution + filtered leaky ReLU between two sampling rates; or, as the last layer
    (``is_torgb``), a 1x1 modulated convolution to colours with bias and clamp.

    ``magnitude_ema`` is the training-time mean square of the layer's input: its inverse square root
    normalises the input. Filters: ``up_filter`` (cutoff of the input, at the temporary rate) and
    ``down_filter`` (cutoff of the output; radial in config R unless critically sampled).
    """

    def __init__(
        self,
        w_dim: int,
        spec: LayerSpec,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = spec.is_torgb
        self.in_channels = spec.in_channels
        self.out_channels = spec.out_channels
        self.in_size = spec.in_size
        self.out_size = spec.out_size
        self.conv_kernel = 1 if spec.is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        tmp_rate = max(spec.in_sampling_rate, spec.out_sampling_rate) * (
            1 if spec.is_torgb else lrelu_upsampling
        )
        self.up_factor = tmp_rate // spec.in_sampling_rate
        self.down_factor = tmp_rate // spec.out_sampling_rate
        if (
            self.up_factor * spec.in_sampling_rate != tmp_rate
            or self.down_factor * spec.out_sampling_rate != tmp_rate
        ):
            raise ValueError(
                f"sampling rates {spec.in_sampling_rate} -> {spec.out_sampling_rate} do not divide"
            )
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not spec.is_torgb else 1
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not spec.is_torgb else 1

        self.affine = FullyConnectedLayer(w_dim, spec.in_channels, bias_init=1)
        k = self.conv_kernel
        self.weight = nn.Parameter(torch.randn([spec.out_channels, spec.in_channels, k, k]))
        self.bias = nn.Parameter(torch.zeros([spec.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer(
            "up_filter", design_lowpass_filter(up_taps, spec.in_cutoff, spec.in_half_width * 2, tmp_rate)
        )
        radial = use_radial_filters and not spec.is_critically_sampled
        self.register_buffer(
            "down_filter",
            design_lowpass_filter(down_taps, spec.out_cutoff, spec.out_half_width * 2, tmp_rate, radial),
        )
        # Pads (on the upsampled signal) that turn the full convolution's output into out_size samples after
        # both filters, centred as in the paper's symmetric interpretation (appendix C.3).
        total = (self.out_size - 1) * self.down_factor + 1
        total -= (self.in_size + k - 1) * self.up_factor
        total += up_taps + down_taps - 2
        lo = (total + self.up_factor) // 2
        self.padding = (lo, total - lo, lo, total - lo)
        self.weight_gain = 1 / math.sqrt(spec.in_channels * k * k)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * self.weight_gain
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            padding=self.conv_kernel - 1,
            demodulate=not self.is_torgb,
            input_gain=self.magnitude_ema.rsqrt(),
        )
        return filtered_lrelu(
            x,
            self.up_filter,
            self.down_filter,
            self.bias,
            up=self.up_factor,
            down=self.down_factor,
            padding=self.padding,
            gain=1 if self.is_torgb else math.sqrt(2),
            slope=1 if self.is_torgb else 0.2,
            clamp=self.conv_clamp,
        )


class SynthesisNetwork(nn.Module):
    """w+ [N, num_ws, w_dim] -> image [N, img_channels, R, R]: Fourier input (row 0), ``num_layers`` layers
    and ToRGB (one row each), output scaled by ``output_scale``. Layers are named
    ``L{index}_{size}_{channels}``, as in NVIDIA's networks."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_ws = num_layers + 2
        self.output_scale = output_scale
        specs = layer_schedule(
            img_resolution,
            img_channels,
            channel_base,
            channel_max,
            num_layers,
            num_critical,
            first_cutoff,
            first_stopband,
            last_stopband_rel,
            margin_size,
        )
        first = specs[0]
        self.input = SynthesisInput(
            w_dim, first.in_channels, first.in_size, first.in_sampling_rate, first.in_cutoff
        )
        self.layer_names: list[str] = []
        for idx, spec in enumerate(specs):
            name = f"L{idx}_{spec.out_size}_{spec.out_channels}"
            setattr(self, name, SynthesisLayer(w_dim, spec, **layer_kwargs))
            self.layer_names.append(name)

    def forward(self, ws: Tensor, noise_mode: NoiseMode = "const") -> Tensor:
        """``noise_mode`` is accepted for the common generator API and has no effect: StyleGAN3 has no noise
        inputs, so every mode gives the same image."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        rows = ws.to(torch.float32).unbind(dim=1)
        x = self.input(rows[0])
        for name, w in zip(self.layer_names, rows[1:], strict=True):
            x = getattr(self, name)(x, w)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)


class StyleGAN3Generator(nn.Module):
    """Mapping + synthesis, constructed from the keyword arguments of NVIDIA's StyleGAN3 ``Generator``
    (synthesis and layer arguments flat, ``mapping_kwargs`` nested; two mapping layers by default).

    Config T is the defaults; config R is ``conv_kernel=1, use_radial_filters=True`` with doubled
    ``channel_base`` / ``channel_max``. Training-only arguments (``magnitude_ema_beta``, ``num_fp16_res``)
    are not accepted here; the pickle loader drops them (see :mod:`synthdb.nets.generator`).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        mapping_kwargs: Mapping[str, Any] | None = None,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim,
            img_resolution=img_resolution,
            img_channels=img_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            num_layers=num_layers,
            num_critical=num_critical,
            first_cutoff=first_cutoff,
            first_stopband=first_stopband,
            last_stopband_rel=last_stopband_rel,
            margin_size=margin_size,
            output_scale=output_scale,
            conv_kernel=conv_kernel,
            filter_size=filter_size,
            lrelu_upsampling=lrelu_upsampling,
            use_radial_filters=use_radial_filters,
            conv_clamp=conv_clamp,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim,
            c_dim=c_dim,
            w_dim=w_dim,
            num_ws=self.num_ws,
            **{"num_layers": 2, **(mapping_kwargs or {})},
        )

    def forward(
        self,
        z: Tensor,
        c: Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: NoiseMode = "const",
    ) -> Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


# --- NVIDIA pickles and tiny configurations (used by synthdb.nets.generator) --------------------------------

#: Recorded NVIDIA constructor arguments that only steer training (EMA decays) or fp16 execution: synthdb's
#: network has the same arithmetic without them.
_TRAINING_ONLY = frozenset({"num_fp16_res", "magnitude_ema_beta"})


def kwargs_from_pickle(record: PickledModule) -> dict[str, Any]:
    """NVIDIA's StyleGAN3 ``Generator`` constructor arguments -> :class:`StyleGAN3Generator`'s.

    ``mapping_kwargs.w_avg_beta`` is dropped too: NVIDIA's StyleGAN3 mapping always has ``w_avg``, and the
    decay only matters while training.
    """
    params = list(inspect.signature(StyleGAN3Generator).parameters)
    kwargs = dict(zip(params, record.init_args, strict=False))
    kwargs.update(record.init_kwargs)
    for key in _TRAINING_ONLY:
        kwargs.pop(key, None)
    mapping = kwargs.get("mapping_kwargs") or {}
    if not isinstance(mapping, Mapping):
        raise ValueError(f"mapping_kwargs is a {type(mapping).__name__}, not a dict")
    kwargs["mapping_kwargs"] = {k: v for k, v in mapping.items() if k != "w_avg_beta"}
    if unknown := sorted(set(kwargs) - set(params)):
        raise ValueError(f"constructor arguments synthdb's StyleGAN3 does not know: {', '.join(unknown)}")
    return kwargs


def is_config_r(record: PickledModule) -> bool:
    """Whether a pickled StyleGAN3 is config R (radial filters) rather than T: the class names are the same,
    only the recorded arguments tell them apart."""
    return bool(record.init_kwargs.get("use_radial_filters", False))


def tiny_init(net: nn.Module, samples: int = 16) -> None:
    """Fill what a fresh network leaves degenerate, so that the tiny configurations exercise every path.

    The input affine starts at zero weight (every w gets the same pose): it gets random weights, so w rotates
    and translates the Fourier features. Biases get small random values. ``magnitude_ema`` (1 when fresh) is
    set layer by layer to the mean square of the layer's input over ``samples`` random w, which is what
    training tracks; ``w_avg`` to the mean w of 4096 random z. Finally the ToRGB weight is scaled so that
    images have a standard deviation of about 0.5, mostly inside [-1, 1] (saved PNGs are not saturated).
    """
    assert isinstance(net, StyleGAN3Generator)
    synthesis = net.synthesis
    with torch.no_grad():
        synthesis.input.affine.weight.normal_(0, 0.3)
        for name, param in synthesis.named_parameters():
            if name.endswith("bias") and "affine" not in name:
                param.normal_(0, 0.1)
        z = torch.randn(4096, net.z_dim)
        c = torch.randn(4096, net.c_dim) if net.c_dim else None
        ws = net.mapping(z, c)
        net.mapping.w_avg.copy_(ws[:, 0].mean(dim=0))
        ws = ws[:samples]
        x = synthesis.input(ws[:, 0])
        for name, w in zip(synthesis.layer_names, ws[:, 1:].unbind(dim=1), strict=True):
            layer = getattr(synthesis, name)
            layer.magnitude_ema.copy_(x.square().mean())
            x = layer(x, w)
        torgb = getattr(synthesis, synthesis.layer_names[-1])
        torgb.weight.mul_(0.5 / (x * synthesis.output_scale).std())
