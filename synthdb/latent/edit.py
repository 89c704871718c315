"""Latent editing along covariate directions (spec 8.3): neutralisation, edits, augmentations.

With ``n`` a direction's unit normal and ``mu-`` < 0 < ``mu+`` the mean training projections on its
negative and positive sides (:mod:`synthdb.latent.directions`):

* **neutralisation**: remove the pose and the illumination components (project onto their hyperplanes
  through the origin, in that order), then set the smile component to ``mu-`` (the mean non-smiling
  side);
* **edit** ``(name, strength)``: set the component along ``n`` to ``strength * mu+`` (the reference's
  expression edit; for pose and illumination, whose positive side is "right", a negative strength
  goes left);
* **binary augmentation** (pose, illumination): ``w + s n`` for ``s`` in ``scaling * linspace(-m, m,
  6)``, ``m = max(-mu-, mu+)``, keeping the existing component;
* **expression augmentation**: one edit per expression with ``strength = scaling``;
* **augmentation**: 6 pose + 6 illumination + 5 expression latents, labelled ``pose_0..5``,
  ``illumination_0..5`` and the expression names (what the ``covariates`` variations make);
* **DisCo offsets**: ``n_k * s_k * max(-mu-_k, mu+_k)`` per direction, the spans that ``disco``
  variations draw their starting points in.

Every operation works on latents of any leading shape (..., w_dim), on the latents' own device and
dtype (the reference built its editor on cuda and failed on CPU latents), and returns new tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from synthdb.catalog.engine import Catalog
from synthdb.errors import SynthdbError
from synthdb.latent.directions import COVARIATES, EXPRESSIONS, DirectionSet
from synthdb.store.hdf5 import H5Sample, read_sample, write_sample
from synthdb.zoo import REFERENCE_NAMES

BINARY_STEPS = 6


@dataclass(frozen=True)
class CovariateScaling:
    """How far augmentations reach along each kind of covariate (``--pose-scaling`` and friends);
    the expression scaling applies to all five expressions."""

    pose: float = 1.0
    illumination: float = 1.0
    expression: float = 1.0

    def of(self, name: str) -> float:
        return {"pose": self.pose, "illumination": self.illumination}.get(name, self.expression)


def augmentation_labels() -> list[str]:
    """Labels of :meth:`LatentEdit.augmentation`'s latents, in order."""
    sweeps = [f"{name}_{k}" for name in ("pose", "illumination") for k in range(BINARY_STEPS)]
    return sweeps + list(EXPRESSIONS)


class LatentEdit:
    """Edits with the directions of one :class:`~synthdb.latent.directions.DirectionSet`."""

    def __init__(self, directions: DirectionSet) -> None:
        self.directions = directions
        self.names = directions.names
        self.normals = torch.from_numpy(directions.normals)
        self.neg_means = torch.from_numpy(directions.neg_means)
        self.pos_means = torch.from_numpy(directions.pos_means)

    @classmethod
    def load(cls, catalog: Catalog, name: str) -> LatentEdit:
        return cls(DirectionSet.load(catalog, name))

    def _get(self, name: str, like: Tensor, purpose: str) -> tuple[Tensor, Tensor, Tensor]:
        """(normal, mu-, mu+) of direction ``name`` on ``like``'s device and dtype."""
        self.directions.require([name], purpose)
        k = self.names.index(name)
        return (
            self.normals[k].to(like),
            self.neg_means[k].to(like),
            self.pos_means[k].to(like),
        )

    @staticmethod
    def _set_component(w: Tensor, n: Tensor, value: Tensor | float) -> Tensor:
        return w - (w @ n)[..., None] * n + value * n

    def neutralise(self, w: Tensor) -> Tensor:
        """No pose, no illumination, the mean non-smiling expression."""
        for name in ("pose", "illumination"):
            n, _, _ = self._get(name, w, "neutralisation")
            w = self._set_component(w, n, 0.0)
        n, neg, _ = self._get("smile", w, "neutralisation")
        return self._set_component(w, n, neg)

    def edit(self, w: Tensor, name: str, strength: float = 1.0) -> Tensor:
        """The component along ``name`` set to ``strength * mu+``."""
        if name not in COVARIATES:
            raise SynthdbError(f"unknown edit {name!r}: use one of {', '.join(COVARIATES)}")
        n, _, pos = self._get(name, w, f"the {name} edit")
        return self._set_component(w, n, strength * pos)

    def binary_augmentation(
        self, w: Tensor, name: str, scaling: float = 1.0, num: int = BINARY_STEPS
    ) -> Tensor:
        """(..., num, w_dim): w moved by ``num`` evenly spaced amounts across the direction's reach."""
        n, neg, pos = self._get(name, w, f"{name} augmentation")
        reach = torch.maximum(-neg, pos)
        scales = scaling * torch.linspace(-1.0, 1.0, num, dtype=w.dtype, device=w.device) * reach
        return w[..., None, :] + scales[:, None] * n

    def expression_augmentation(self, w: Tensor, scaling: float = 1.0) -> Tensor:
        """(..., 5, w_dim): one latent per expression, its component set to ``scaling * mu+``."""
        return torch.stack([self.edit(w, e, scaling) for e in EXPRESSIONS], dim=-2)

    def augmentation(self, w: Tensor, scaling: CovariateScaling = CovariateScaling()) -> Tensor:
        """(..., 17, w_dim): pose sweep, illumination sweep, expressions; see :func:`augmentation_labels`."""
        return torch.cat(
            [
                self.binary_augmentation(w, "pose", scaling.pose),
                self.binary_augmentation(w, "illumination", scaling.illumination),
                self.expression_augmentation(w, scaling.expression),
            ],
            dim=-2,
        )

    def disco_offsets(self, scaling: CovariateScaling = CovariateScaling()) -> Tensor:
        """(K, w_dim): ``n_k * s_k * max(-mu-_k, mu+_k)`` for every direction of the set."""
        s = torch.tensor([scaling.of(name) for name in self.names])
        reach = torch.maximum(-self.neg_means, self.pos_means)
        return self.normals * (s * reach)[:, None]


def edit_sample_file(
    catalog: Catalog,
    directions: str,
    source: str | os.PathLike,
    out: str | os.PathLike,
    edit: str | None = None,
    strength: float = 1.0,
    neutralise: bool = False,
) -> Path:
    """Edit the ``w_latent`` of a Sample file (neutralise first if asked, then ``edit``) into ``out``.

    The sample must come from the set's generator; its ``c_label`` is kept, its embedding dropped (it
    described the unedited face).
    """
    if edit is None and not neutralise:
        raise SynthdbError("nothing to do: pass --edit NAME, --neutralise, or both")
    editor = LatentEdit.load(catalog, directions)
    sample = read_sample(source)
    generator = editor.directions.generator
    stored = sample.network_type
    if stored is not None and generator not in (stored, REFERENCE_NAMES.get(stored)):
        raise SynthdbError(
            f"{source} holds latents of {sample.network_type}, but direction set {directions} describes "
            f"{generator}: pass a direction set analysed on {sample.network_type} projections"
        )
    if sample.w_latent is None:
        raise SynthdbError(f"{source} has no w_latent: pass a sample with a W latent (W+ is not edited)")
    if sample.w_latent.shape[-1] != editor.directions.w_dim:
        raise SynthdbError(
            f"{source}: w_latent has {sample.w_latent.shape[-1]} values, direction set {directions} "
            f"{editor.directions.w_dim}: pass a sample of {generator}"
        )
    w = torch.from_numpy(sample.w_latent)
    if neutralise:
        w = editor.neutralise(w)
    if edit is not None:
        w = editor.edit(w, edit, strength)
    out = Path(out)
    write_sample(
        out,
        H5Sample(
            w_latent=np.asarray(w, dtype=np.float32),
            c_label=sample.c_label,
            network_type=sample.network_type or generator,
        ),
    )
    return out
