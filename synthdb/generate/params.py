"""The parameters of the generation runs: ``ReferenceParams`` (with ``LangevinParams``) and
``VariationParams``, one dataclass each, shared by the API and ``synthdb generate references|variations``.

Kept apart from the algorithms so that the command line, which builds its options from the field specs
(:mod:`synthdb.params`), starts without importing torch. A run stores its params resolved (every
network-dependent default filled in), so ``runs resume`` rebuilds exactly what ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from synthdb import defaults
from synthdb.errors import SynthdbError
from synthdb.params import (
    check_fields,
    choice,
    count,
    device_param,
    non_negative,
    param,
    params_from,
    radians,
)

REFERENCE_ALGORITHMS = ("random", "ict", "langevin")
VARIATION_ALGORITHMS = ("dispersion", "disco", "covariates")


#: The reference's adaptive Langevin step (spec 7.2 d), for generators whose card sets none.
REFERENCE_TIMESTEP = -0.3


@dataclass
class LangevinParams:
    """Reference defaults (spec 7.2 d) except ``checkpoint_every`` (resume needs checkpoints) and what
    depends on the networks: ``repulsion_radius`` (None: the embedder's threshold times the reference's
    r0/ICT ratio) and ``timestep`` (None: the generator card's, else the reference's -0.3)."""

    iterations: int = non_negative(
        10, flags=("--langevin-iterations",), help="Langevin iterations (the reference's README: 100)."
    )
    checkpoint_every: int = count(
        1, flags=("--langevin-checkpoint-every",), help="Iterations per committed unit (what a resume keeps)."
    )
    repulsion_coefficient: float = non_negative(
        1.0,
        flags=("--langevin-repulsion-coefficient", "-k0"),
        help="k0: strength of the repulsion between identities closer than r0.",
    )
    repulsion_radius: float | None = radians(
        None,
        flags=("--langevin-repulsion-radius", "-r0"),
        help="r0, radians: identities closer than this repel [default: the embedder's threshold x 1.7/1.4, "
        "the reference's r0/ICT ratio].",
    )
    timestep: float | None = param(
        None,
        flags=("--langevin-timestep", "-dt"),
        help="dt; negative: adaptive, this factor of the closest latent pair over the largest force "
        "[default: the generator card's, else the reference's -0.3].",
    )
    viscous_coefficient: float = param(
        1.0,
        flags=("--langevin-viscous-coefficient", "-gamma"),
        low=0,
        low_open=True,
        help="gamma (mu): viscosity; each step moves by dt/gamma times the force.",
    )
    random_force: float = non_negative(
        0.01, flags=("--langevin-random-force", "-eta0"), help="eta0: scale of the random (Brownian) force."
    )
    latent_force: float = non_negative(
        0.0,
        flags=("--langevin-latent-force", "-kl"),
        help="kl: pull of every latent towards w_avg (the reference's README: 0.1).",
    )
    avoid_radius: float | None = radians(
        None,
        flags=("--langevin-avoid-radius",),
        help="Radians: identities closer than this to an --avoid embedding are pushed away [default: r0].",
    )
    #: hold the autograd graph of all identities for one forward pass per iteration (faster); off: a
    #: no-grad pass plus one backward per batch (memory of one batch, for large generators)
    whole_graph: bool = param(
        True,
        flags=("--langevin-whole-graph/--langevin-bounded-memory",),
        help="Bounded: a no-grad pass plus one backward per batch (for generators too large to hold every "
        "identity's graph); the same forces up to float rounding.",
    )


@dataclass
class ReferenceParams:
    """Everything a references run needs; stored (resolved) as the run's params so ``runs resume`` can
    rebuild it. ``ict`` None: the embedder's threshold. ``max_candidates`` bounds ICT's draws per
    requested identity, so a threshold too strict for the networks ends in minutes with advice. The field
    specs are also the options of ``synthdb generate references`` (:mod:`synthdb.params`)."""

    name: str = param(help="Name of the new synthetic dataset.")
    num_identities: int = count(help="Reference identities to make.")
    algorithm: str = choice(
        "langevin", REFERENCE_ALGORITHMS, help="random; ict: rejection on the threshold; langevin: repulsion."
    )
    generator: str = defaults.generator_param()
    embedder: str = defaults.embedder_param()
    ict: float | None = radians(
        None,
        help="Inter-class threshold, radians: ict keeps candidates at least this far from every accepted "
        "one; every algorithm reports the pairs below it [default: the embedder's threshold].",
    )
    truncation: float = param(defaults.TRUNCATION, help="Truncation psi of the initial latents (1: none).")
    seed: int = non_negative(0, help="Root seed of every random draw.")
    batch_size: int = count(8, help="Images per forward/backward pass.")
    avoid: str | None = param(
        None, help="A catalog dataset whose embeddings repel (ict: are kept at least the ICT away)."
    )
    max_candidates: int = count(100, help="ict: give up after this many candidates per identity.")
    device: str | None = device_param()
    langevin: LangevinParams = field(default_factory=LangevinParams)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceParams:
        data = dict(data)
        data["langevin"] = params_from(LangevinParams, data.get("langevin", {}))
        return params_from(cls, data)

    def resolved(self) -> ReferenceParams:
        """A copy with every network-dependent default filled in (:mod:`synthdb.defaults`)."""
        lp = self.langevin
        if lp.repulsion_radius is None:
            lp = replace(lp, repulsion_radius=defaults.repulsion_radius(self.embedder))
        if lp.timestep is None:
            setting = defaults.generator_setting(self.generator, "langevin_timestep", REFERENCE_TIMESTEP)
            lp = replace(lp, timestep=setting)
        ict = defaults.threshold(self.embedder) if self.ict is None else self.ict
        return replace(self, ict=ict, langevin=lp, device=defaults.device(self.device))

    def check(self) -> None:
        """The field specs' ranges and choices (the CLI's rules), then what combines several fields."""
        check_fields(self)
        if self.avoid and self.algorithm == "random":
            raise SynthdbError("--avoid needs --algorithm ict or langevin (random references repel nothing)")


@dataclass
class VariationParams:
    """Everything a variations run needs (reference defaults, spec 7.3 a); stored (resolved) as the run's
    params. None: a network-dependent default (:meth:`resolved`). The field specs are also the options of
    ``synthdb generate variations`` (:mod:`synthdb.params`)."""

    name: str = param(help="Name of the new synthetic dataset (shared by every shard).")
    references: str = param(help="Dataset of reference identities.")
    algorithm: str = choice(
        "dispersion",
        VARIATION_ALGORITHMS,
        help="dispersion; disco: dispersion from random covariate edits; covariates: the 17 IJCB 2021 edits "
        "of each neutralised reference (disco and covariates need --directions).",
    )
    num_variations: int = count(
        16,
        hidden=("--dispersion-num-augmentations",),
        help="Variations per identity, dispersion/disco (covariates: always 17); the reference's "
        "--dispersion-num-augmentations.",
    )
    iterations: int = non_negative(20, flags=("--dispersion-iterations",), help="Dispersion iterations.")
    embedding_coefficient: float = non_negative(
        20.0,
        flags=("--dispersion-embedding-coefficient",),
        help="k_e: pull of each variation's embedding towards its reference's.",
    )
    latent_coefficient: float = non_negative(
        1.0,
        flags=("--dispersion-latent-coefficient",),
        help="k_w: repulsion between the latents of one identity closer than the latent radius.",
    )
    latent_radius: float | None = param(
        None,
        flags=("--dispersion-latent-radius",),
        low=0,
        low_open=True,
        help="r_w, a Euclidean distance in the generator's W space (not an angle): latents of one identity "
        "closer than this repel [default: the generator card's, else the reference's 12].",
    )
    global_coefficient: float | None = non_negative(
        None,
        flags=("--dispersion-latent-global-coefficient",),
        help="k_g: pull towards w_avg [default: the generator card's, else the reference's 1].",
    )
    random_force: float = non_negative(
        0.05, flags=("--dispersion-random-force",), help="eta: scale of the random force."
    )
    viscous_coefficient: float = param(
        1.0,
        flags=("--dispersion-viscous-coefficient",),
        low=0,
        low_open=True,
        help="mu: viscosity; each step moves by dt/mu times the force.",
    )
    timestep: float = param(
        0.05, flags=("--dispersion-timestep",), help="dt; negative: adaptive, as Langevin's."
    )
    initial_noise: float = non_negative(
        0.2,
        flags=("--dispersion-initial-noise",),
        help="sigma_0: Gaussian noise added to the reference latent to start each variation.",
    )
    directions: str | None = param(
        None, help="disco/covariates: a direction set from `synthdb latent analyze` (`latent list`)."
    )
    pose_scaling: float = param(
        1.0, flags=("--pose-scaling", "-ps"), help="Scale of the pose direction (disco, covariates)."
    )
    illumination_scaling: float = param(
        1.0,
        flags=("--illumination-scaling", "-is"),
        help="Scale of the illumination direction (disco, covariates).",
    )
    expression_scaling: float = param(
        1.0,
        flags=("--expression-scaling", "-es"),
        help="Scale of the 5 expression directions (disco, covariates).",
    )
    ict: float | None = radians(
        None, help="Threshold of the prop_ict statistic, radians [default: the embedder's threshold]."
    )
    seed: int = non_negative(0, help="Root seed of every random draw.")
    batch_size: int = count(8, help="Images per forward/backward pass.")
    identities_per_unit: int = count(8, help="Identities per committed work unit.")
    generator: str = defaults.generator_param()
    embedder: str = defaults.embedder_param()
    device: str | None = device_param()

    def resolved(self) -> VariationParams:
        """A copy with the network-dependent defaults filled in: ``ict`` from the embedder card, the latent
        radius and the pull towards w_avg from the generator card (else the reference's 12 and 1)."""
        return replace(
            self,
            ict=defaults.threshold(self.embedder) if self.ict is None else self.ict,
            latent_radius=defaults.generator_setting(self.generator, "dispersion_latent_radius", 12.0)
            if self.latent_radius is None
            else self.latent_radius,
            global_coefficient=defaults.generator_setting(
                self.generator, "dispersion_global_coefficient", 1.0
            )
            if self.global_coefficient is None
            else self.global_coefficient,
            device=defaults.device(self.device),
        )

    def check(self) -> None:
        """The field specs' ranges and choices (the CLI's rules), then what combines several fields."""
        check_fields(self)
        if self.algorithm in ("disco", "covariates") and not self.directions:
            raise SynthdbError(
                f"{self.algorithm} needs covariate directions: pass --directions NAME "
                "(a direction set made by `synthdb latent analyze`; `synthdb latent list` shows them)"
            )
        if self.algorithm == "dispersion" and self.directions:
            raise SynthdbError(
                "--directions is used by disco and covariates: add --algorithm disco, or drop --directions"
            )
