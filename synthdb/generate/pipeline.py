"""E(w) = FR(crop(G(w))): the differentiable map from latents to identity embeddings.

Every generation algorithm pushes latents around by the angles between these embeddings, so this is
the one place that knows how a generator's images reach an embedder: constant synthesis noise (a
latent always gives the same image, so a stored latent reproduces its stored embedding), the fixed
two-point crop from the generator's framing into the embedder's preset, pixels in [0, 255].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from synthdb import zoo
from synthdb.context import Context
from synthdb.faces.align import fixed_crop, generator_preset
from synthdb.faces.embed import Embedder
from synthdb.nets.generator import Generator


class PipelineParams(Protocol):
    """What every generation algorithm's params say about its networks."""

    generator: str
    embedder: str
    device: str
    batch_size: int


def load_pipeline(ctx: Context | None, params: PipelineParams) -> Pipeline:
    """The params' generator and embedder, with weights from the workspace ``ctx`` the command runs in (never
    from whatever workspace the current directory is in)."""
    generator = zoo.generator(ctx, params.generator, params.device)
    return Pipeline(generator, zoo.embedder(ctx, params.embedder, params.device), params.batch_size)


class Pipeline:
    """A frozen generator and embedder; gradients only ever reach the latents."""

    def __init__(self, generator: Generator, embedder: Embedder, batch_size: int = 8) -> None:
        self.generator = generator
        self.embedder = embedder
        self.batch_size = batch_size
        self.native = generator_preset(generator.framing, generator.img_resolution)
        embedder.net.requires_grad_(False).eval()

    @property
    def w_avg(self) -> Tensor:
        return self.generator.w_avg.detach()

    def images(self, w: Tensor) -> Tensor:
        """Images (N, 3, H, W) in [-1, 1] of latents (N, w_dim), constant noise."""
        return self.generator.synthesis(w, noise_mode="const")

    def forward(self, w: Tensor) -> Tensor:
        """Embeddings (N, D) of one batch of latents, differentiable."""
        pixels = (self.images(w) + 1) * 127.5
        return self.embedder.embed(fixed_crop(pixels, self.native, self.embedder.preset))

    @torch.no_grad()
    def embed(self, w: Tensor) -> Tensor:
        """Embeddings of any number of latents, in chunks of ``batch_size``, without gradients."""
        return torch.cat([self.forward(chunk) for chunk in w.split(self.batch_size)])

    def coupled_gradient(self, w: Tensor, loss: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        """(embeddings, d loss / d w) where ``loss(embeddings, detached embeddings)`` couples all rows:
        one forward pass with gradients (its embeddings double as the detached ones, saving the extra
        no-grad pass) and one backward pass. Holds the graph of all rows: use :meth:`gradient` with a
        no-grad pass when that does not fit in memory."""
        chunks = [chunk.detach().requires_grad_(True) for chunk in w.split(self.batch_size)]
        with torch.enable_grad():
            e = torch.cat([self.forward(chunk) for chunk in chunks])
            grads = torch.autograd.grad(loss(e, e.detach()), chunks)
        return e.detach(), torch.cat(grads)

    def gradient(self, w: Tensor, loss: Callable[[Tensor, slice], Tensor]) -> tuple[Tensor, Tensor]:
        """(embeddings, d loss / d w) for all latents, one backward pass per chunk.

        ``loss(embeddings_of_chunk, rows)`` must be a sum of per-row terms, so each chunk's gradient is
        exact for every element of the chunk (the reference kept only each chunk's first gradient).
        """
        grads, embeddings = [], []
        for start in range(0, len(w), self.batch_size):
            rows = slice(start, min(start + self.batch_size, len(w)))
            chunk = w[rows].detach().requires_grad_(True)
            with torch.enable_grad():
                e = self.forward(chunk)
                (grad,) = torch.autograd.grad(loss(e, rows), chunk)
            grads.append(grad)
            embeddings.append(e.detach())
        return torch.cat(embeddings), torch.cat(grads)
