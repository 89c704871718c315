"""StyleGAN2 generator (Karras et al. 2020, config F) in plain torch, laid out like NVIDIA's PyTorch port.

The module tree, parameter and buffer names, shapes and registration order follow NVIDIA's ``G_ema`` networks
(stylegan2-ada-pytorch ``training/networks.py`` and the stylegan3 repository's ``networks_stylegan2.py``), so
an official state dict loads 1:1 with ``load_state_dict(strict=True)``; ``tests/data`` holds the key lists of
the full-size 256 and 1024 networks and golden outputs of the official code that this file reproduces.

What differs from NVIDIA's code, on purpose:
- no custom CUDA kernels: resampling, bias + activation and clamping are ordinary torch ops, so the network
  runs anywhere torch runs, under autocast, ``torch.compile`` and autograd (gradients w.r.t. the latents);
- modulation is applied to activations (scale input channels, convolve with the shared weight, demodulate
  output channels) rather than as a grouped convolution with per-sample weights. Both are the same
  arithmetic; this one is a plain batched convolution, which is what makes large batches pay off, and its
  demodulation coefficients come from ``styles^2 @ sum(weight^2)`` without materialising per-sample weights;
- no fp16 / memory-format switches (``num_fp16_res`` ...): activations are always channels-last, and
  precision is the caller's choice (bf16 autocast is safe; fp16 may overflow without NVIDIA's
  pre-normalisation, which is not reproduced);
- no training machinery (w_avg tracking, style mixing, discriminator);
- a modulated 3x3 layer's demodulation, noise, bias, leaky ReLU, gain and clamp are one autograd node with
  a hand-written backward (float32, no autocast): the same arithmetic (up to the order of two additions) in
  fewer passes over the activations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NoiseMode = Literal["const", "random", "none"]
NOISE_MODES: tuple[str, ...] = ("const", "random", "none")
ARCHITECTURES: tuple[str, ...] = ("orig", "skip", "resnet")
DEFAULT_FILTER: tuple[int, ...] = (1, 3, 3, 1)

#: name -> (function, default gain). The gains keep activations at unit variance for the He-style init;
#: they are part of the trained networks' arithmetic, so they must match NVIDIA's ``bias_act`` table.
ACTIVATIONS: Mapping[str, tuple[Callable[[Tensor], Tensor], float]] = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
    "elu": (F.elu, 1.0),
    "selu": (F.selu, 1.0),
    "softplus": (F.softplus, 1.0),
    "swish": (lambda x: x * torch.sigmoid(x), math.sqrt(2)),
}


def _activation(name: str) -> tuple[Callable[[Tensor], Tensor], float]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


# --- resampling ---------------------------------------------------------------------------------------------


def make_filter(taps: Sequence[float] | Tensor = DEFAULT_FILTER) -> Tensor:
    """The normalised FIR filter NVIDIA stores as ``resample_filter`` buffers.

    Short 1-D tap lists become their 2-D outer product (NVIDIA keeps 8+ taps separable, 1-D); the filter is
    scaled to unit DC gain. The result must equal the official buffer bit for bit, since it is part of the
    state dict that loads into this network.
    """
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()


def _fir(x: Tensor, kernel: Tensor, up: tuple[int, int], pads: tuple[int, int, int, int]) -> Tensor:
    """One depthwise pass of ``kernel`` [kh, kw] with zero-insertion upsampling by ``up`` = (uy, ux).

    Semantics: insert ``u - 1`` zeros after every sample, pad by ``pads`` = (x0, x1, y0, y1) (negative
    crops), then convolve (true convolution) with ``kernel``, keeping only fully overlapped outputs.
    Upsampling is done by a strided transposed convolution, which is exactly that convolution evaluated
    on the zero-inserted signal without touching the zeros; the pads are then re-expressed relative to
    its full output. Channels are convolution groups (faster on CPU than folding them into the batch).
    """
    channels = x.shape[1]
    kh, kw = kernel.shape
    uy, ux = up
    k = kernel.to(x.dtype)[None, None].expand(channels, 1, kh, kw)
    x0, x1, y0, y1 = pads
    if (uy, ux) == (1, 1):
        return F.conv2d(F.pad(x, [x0, x1, y0, y1]), k.flip([2, 3]), groups=channels)
    x = F.conv_transpose2d(x, k, stride=(uy, ux), groups=channels)
    return F.pad(x, [x0 - kw + 1, x1 + ux - kw, y0 - kh + 1, y1 + uy - kh])


def upfirdn2d(
    x: Tensor, f: Tensor, up: int = 1, padding: Sequence[int] = (0, 0, 0, 0), gain: float = 1.0
) -> Tensor:
    """Upsample by ``up`` (zero insertion), pad by ``padding`` = (x0, x1, y0, y1), apply the FIR filter ``f``.

    Same semantics as NVIDIA's ``upfirdn2d`` without downsampling (StyleGAN2 never needs it): ``f`` is 2-D
    [fh, fw] or 1-D separable; the signal is scaled by ``gain`` (``up**2`` keeps the mean when zeros are
    inserted on both axes).
    """
    x0, x1, y0, y1 = padding
    if f.ndim == 2:
        return _fir(x, f * gain, (up, up), (x0, x1, y0, y1))
    g = f * math.sqrt(gain)
    x = _fir(x, g[None, :], (1, up), (x0, x1, 0, 0))
    return _fir(x, g[:, None], (up, 1), (0, 0, y0, y1))


def upsample2d(x: Tensor, f: Tensor, up: int = 2) -> Tensor:
    """Upsample by ``up`` with the FIR filter ``f``, output exactly ``up`` times larger (the skip images)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def conv2d_resample(
    x: Tensor, weight: Tensor, f: Tensor | None = None, up: int = 1, padding: int = 0
) -> Tensor:
    """2-D convolution, optionally on the input upsampled by ``up`` with the FIR filter ``f``.

    Without upsampling it is ``conv2d`` (cross-correlation), as in NVIDIA's code. With upsampling NVIDIA's
    layers use true convolution of the zero-inserted, filtered, ``padding``-padded image. Convolution and
    filtering commute, so the weight goes first, as a strided transposed convolution (no multiplications by
    inserted zeros), and the filter runs on its output with the pads shifted by the kernel size.
    """
    if up == 1:
        return F.conv2d(x, weight, padding=padding)
    assert f is not None, "upsampling needs a resample filter"
    kh, kw = weight.shape[2:]
    fh, fw = (f.shape[0], f.shape[1]) if f.ndim == 2 else (f.shape[0], f.shape[0])
    px0, px1 = padding + (fw + up - 1) // 2, padding + (fw - up) // 2
    py0, py1 = padding + (fh + up - 1) // 2, padding + (fh - up) // 2
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=up)
    pads = (px0 - kw + 1, px1 - kw + up, py0 - kh + 1, py1 - kh + up)
    return upfirdn2d(x, f, padding=pads, gain=up * up)


def bias_act(
    x: Tensor, b: Tensor | None, act: str = "linear", gain: float | None = None, clamp: float | None = None
) -> Tensor:
    """``clamp(act(x + b) * gain)``, ``b`` broadcast along dim 1; ``gain`` defaults to the activation's."""
    fn, default_gain = _activation(act)
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    x = fn(x)
    gain = default_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Scale each vector to unit root-mean-square: the mapping network's input normalisation."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def demodulation(weight: Tensor, styles: Tensor) -> Tensor:
    """Demodulation coefficients [N, O] of ``weight`` [O, I, k, k] modulated by ``styles`` [N, I]:
    ``rsqrt(sum_i s[n, i]^2 * sum_k weight[o, i, k]^2 + 1e-8)``, without materialising per-sample weights."""
    return (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    noise: Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: Tensor | None = None,
    demodulate: bool = True,
) -> Tensor:
    """StyleGAN2's modulated convolution: per-sample input-channel scales ``styles`` [N, I], weight
    demodulation (unit output variance, :func:`demodulation`), then additive ``noise``.

    Computed on activations (see the module docstring): ``(conv(x * s) * d) + noise``.
    """
    n = x.shape[0]
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding)
    if demodulate:
        x = x * demodulation(weight, styles).to(x.dtype).reshape(n, -1, 1, 1)
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


class _DemodulateBiasLeakyReLU(torch.autograd.Function):
    """``clamp(lrelu(y * d + c, 0.2) * gain)`` in one autograd node: the epilogue of every modulated 3x3
    convolution (demodulation, noise and bias already summed in ``c``, activation, gain, clamp).

    As separate ops autograd runs about ten passes over the activations per layer (each op's output, its
    saved input and a clamp mask of ``lt``/``gt``/``logical_and``/``where``); here the forward is four
    in-place passes and the backward five (its masks read off the saved output, whose sign is the
    activation's input's sign), which is what large batches, whose activations leave the cache, pay for.
    Forward values equal the separate ops' up to the order of the additions; the clamp's gradient is zero
    where the output sits exactly on the bound, as in NVIDIA's ``bias_act`` kernel (torch's ``clamp``
    passes it when the input equals the bound: a measure-zero difference).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, y: Tensor, d: Tensor, c: Tensor, gain: float, clamp: float | None
    ) -> Tensor:
        out = torch.empty_like(y)  # y's layout (channels-last), whatever the broadcast c's
        torch.addcmul(c, y, d, out=out)
        F.leaky_relu_(out, 0.2)
        out.mul_(gain)
        if clamp is not None:
            out.clamp_(-clamp, clamp)
        ctx.save_for_backward(y, d, out)
        ctx.gain, ctx.clamp, ctx.c_shape = gain, clamp, c.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        y, d, out = ctx.saved_tensors
        if ctx.clamp is not None:
            grad = torch.ops.aten.hardtanh_backward(grad, out, -ctx.clamp, ctx.clamp)
        grad = torch.ops.aten.leaky_relu_backward(grad, out, 0.2, True).mul_(ctx.gain)  # a new tensor
        need_y, need_d, need_c = ctx.needs_input_grad[:3]
        grad_y = grad * d if need_y else None
        grad_d = (grad * y).sum(dim=[2, 3], keepdim=True) if need_d else None
        grad_c = grad.sum_to_size(ctx.c_shape) if need_c else None
        return grad_y, grad_d, grad_c, None, None


# --- layers -------------------------------------------------------------------------------------------------


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: weights are stored at unit scale and multiplied by
    ``lr_multiplier / sqrt(in_features)`` at run time (the mapping network's 0.01 lives here)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        _activation(activation)
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Plain (unmodulated) convolution with equalised learning rate: the 1x1 upsampling shortcut of the
    ``resnet`` synthesis architecture."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = _activation(activation)[1]
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, up=self.up, padding=self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (and an optional label c) -> w, broadcast to ``num_ws`` rows, with the truncation trick.

    ``w_avg`` is the training-time running mean of w, the centre of truncation; it exists when
    ``num_ws`` and ``w_avg_beta`` are set, exactly as in NVIDIA's networks.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.998,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: Tensor | None,
        c: Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> Tensor:
        """[N, num_ws, w_dim] (or [N, w_dim] when ``num_ws`` is None); truncation pulls w towards
        ``w_avg`` on all rows, or on the first ``truncation_cutoff`` rows."""
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("this mapping network has no w_avg (w_avg_beta=None): it cannot truncate")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling x2), per-pixel noise, bias, activation, clamp.

    ``noise_const`` is the fixed noise image used by ``noise_mode='const'``: it makes an image a pure
    function of its latent, which synthdb relies on (a saved image is the image of its saved latent).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = _activation(activation)[1]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: Tensor,
        w: Tensor,
        noise_mode: NoiseMode = "const",
        gain: float = 1.0,
        const_noise: Tensor | None = None,
    ) -> Tensor:
        """``const_noise`` replaces ``noise_const`` in const mode, e.g. per-sample images [N, 1, R, R]
        that projection optimises for each of its targets (the buffer is shared by the whole batch)."""
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device, dtype=x.dtype)
                * self.noise_strength
            )
        elif self.use_noise and noise_mode == "const":
            noise = (self.noise_const if const_noise is None else const_noise) * self.noise_strength
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        if self.activation != "lrelu" or x.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
            x = modulated_conv2d(
                x,
                self.weight,
                styles,
                noise=noise,
                up=self.up,
                padding=self.padding,
                resample_filter=self.resample_filter,
            )
            return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)
        # StyleGAN2's own activation in float32: the fused epilogue (see _DemodulateBiasLeakyReLU)
        n = x.shape[0]
        y = conv2d_resample(
            x * styles.reshape(n, -1, 1, 1), self.weight, self.resample_filter, self.up, self.padding
        )
        d = demodulation(self.weight, styles).reshape(n, -1, 1, 1)
        c = self.bias.reshape(1, -1, 1, 1)
        if noise is not None:  # in y's layout: a mixed-layout addcmul is not vectorised (4x slower)
            c = (noise + c).contiguous(memory_format=torch.channels_last)
        return _DemodulateBiasLeakyReLU.apply(y, d, c, self.act_gain * gain, clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation (its scale carries colour)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (learned constant | x2 upsampling conv) + conv, plus the image output.

    ``skip`` (config F) sums the upsampled image of the previous block and this block's ToRGB; ``resnet``
    adds a 1x1 upsampling shortcut around the two convs; ``orig`` only converts the last block to RGB.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = 256,
        **layer_kwargs: Any,
    ) -> None:
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown synthesis architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}"
            )
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.register_buffer("resample_filter", make_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim=w_dim,
            resolution=resolution,
            conv_clamp=conv_clamp,
            **layer_kwargs,
        )
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter
            )

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        noise_mode: NoiseMode = "const",
        noise: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``ws`` [N, num_conv + num_torgb, w_dim]; the image accumulates in float32 whatever the autocast
        dtype, as in NVIDIA's networks. Activations start channels-last (NHWC) and every op keeps that
        layout: oneDNN and cuDNN run batched convolutions faster in it (x1.6 at batch 32 on CPU).
        ``noise`` maps ``conv0`` / ``conv1`` to const-mode noise that replaces their buffers."""
        w_iter = iter(ws.unbind(dim=1))
        n0, n1 = (None, None) if noise is None else (noise.get("conv0"), noise.get("conv1"))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = x.contiguous(memory_format=torch.channels_last)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, const_noise=n1)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, const_noise=n0)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, gain=math.sqrt(0.5), const_noise=n1)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, const_noise=n0)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, const_noise=n1)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter)).to(torch.float32)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    """w+ [N, num_ws, w_dim] -> image [N, img_channels, R, R], one block per power of two from 4 to R.

    Channels per resolution are ``min(channel_base // res, channel_max)``. Consecutive blocks share one w
    row at their boundary (the ToRGB of a block uses the row of the next block's first conv), which is why
    ``num_ws`` is the number of convs plus one.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        **block_kwargs: Any,
    ) -> None:
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(
                channels[res // 2] if res > 4 else 0,
                channels[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                **block_kwargs,
            )
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(
        self, ws: Tensor, noise_mode: NoiseMode = "const", noise: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """``noise`` (const mode) replaces noise buffers by layer name (``b8.conv0``, the prefix of its
        ``noise_const``) with tensors that broadcast against [N, 1, R, R]; absent layers keep theirs."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            own = None if noise is None else {k: noise.get(f"b{res}.{k}") for k in ("conv0", "conv1")}
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode, own)
            w_idx += block.num_conv
        return img.contiguous()


class StyleGAN2Generator(nn.Module):
    """Mapping + synthesis, constructed from the keyword arguments of NVIDIA's ``Generator`` (stylegan3
    repository flavour: synthesis arguments flat, ``mapping_kwargs`` nested).

    ``architecture``, ``resample_filter``, ``conv_clamp``, ``kernel_size``, ``use_noise`` and ``activation``
    are NVIDIA's block and layer options; fp16 and memory-format options are not accepted here (the pickle
    loader drops them, see :mod:`synthdb.nets.generator`).
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
        architecture: str = "skip",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = 256,
        kernel_size: int = 3,
        use_noise: bool = True,
        activation: str = "lrelu",
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
            architecture=architecture,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
            kernel_size=kernel_size,
            use_noise=use_noise,
            activation=activation,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **dict(mapping_kwargs or {})
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


def liven_fresh_weights(net: nn.Module) -> None:
    """What the tiny untrained configurations change in a fresh network, in place: noise strengths drawn
    at random (NVIDIA starts them at zero, which would hide the noise inputs) and ToRGB weights scaled by
    0.2 (the summed skip outputs of a fresh network have a standard deviation near 3; this brings images
    to about 0.6, mostly inside [-1, 1], so saved PNGs are not saturated)."""
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith("noise_strength"):
                param.copy_(torch.randn([]) * 0.3)
            elif name.endswith("torgb.weight"):
                param.mul_(0.2)
