"""The embedded, trained face generator (dcgan-digiface) and the main job on its real faces, at small sizes.

The full-size figures (24+ identities, throughput) come from ``bench/bench_real_faces.py``. Angles are in
radians; the threshold is dlib-resnet's (its card's ``threshold_rad``).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthdb import defaults, zoo
from synthdb.analysis.vectors import Vectors, load_vectors
from synthdb.angles import angle
from synthdb.catalog.samples import identity_labels
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.faces.align import Cropper, generator_preset, get_preset
from synthdb.faces.detect import MtcnnDetector, load_image
from synthdb.generate import units
from synthdb.generate.pipeline import Pipeline
from synthdb.generate.references import ReferenceParams, generate_references
from synthdb.generate.variations import VariationParams, generate_variations
from synthdb.latent.project import ProjectionParams, Projector
from synthdb.nets import dcgan
from synthdb.nets.cards import get_card
from synthdb.nets.generator import Generator

NAME = "dcgan-digiface"


@pytest.fixture(scope="module")
def generator() -> Generator:
    return zoo.generator(None, NAME)


@pytest.fixture(scope="module")
def mtcnn() -> MtcnnDetector:
    return zoo.detector(None, "mtcnn")


def one_face_fraction(generator: Generator, w: torch.Tensor, mtcnn: MtcnnDetector) -> float:
    """Fraction of the images of ``w`` in which MTCNN finds exactly one face (on 4x bicubic upsamples:
    MTCNN's smallest face is 20 px, the generator's faces are about 40)."""
    with torch.no_grad():
        pixels = (generator.synthesis(w).clamp(-1, 1) + 1) * 127.5
    big = F.interpolate(pixels, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 255)
    found = mtcnn.detect([img.round().byte().permute(1, 2, 0).numpy() for img in big])
    return float(np.mean([len(f.faces) == 1 for f in found]))


def committed(ctx: Context, name: str, content: str = "embedding") -> Vectors:
    """A dataset's committed embeddings (dlib-resnet) or latents (w of the generator), in sample-id order."""
    space, column = (defaults.EMBEDDER, "embedding") if content == "embedding" else (NAME, "w")
    return load_vectors(ctx, name, space, content, column).by_sample()


def pair_angles(e: np.ndarray) -> np.ndarray:
    d = angle(torch.from_numpy(e), torch.from_numpy(e)).numpy()
    return d[np.triu_indices(len(e), 1)]


def test_loads_the_packaged_file_as_it_is(generator: Generator) -> None:
    card = get_card(NAME)
    assert (generator.architecture.name, generator.name, generator.untrained) == ("dcgan", NAME, False)
    assert (generator.z_dim, generator.w_dim, generator.num_ws, generator.img_resolution) == (100, 100, 1, 64)
    assert "UNTRAINED" not in generator.describe()
    stored = torch.load(zoo.installed_file(card), map_location="cpu", weights_only=True)[dcgan.CHECKPOINT_KEY]
    ours = generator.network.state_dict()
    assert set(ours) == {*stored, "mapping.w_avg"}  # the file's own names, plus the zero centre
    assert all(torch.equal(ours[k], v) for k, v in stored.items())
    assert card.commercial_use is False and "DigiFace-1M" in card.license


def test_w_is_truncated_z_and_an_image_depends_on_its_own_latent(generator: Generator) -> None:
    z = torch.randn(5, 100, generator=torch.Generator().manual_seed(3))
    w = generator.mapping(z, truncation_psi=0.6)
    torch.testing.assert_close(w, 0.6 * z)
    assert torch.count_nonzero(generator.w_avg) == 0
    with torch.no_grad():
        batch = generator.synthesis(w)
        alone = generator.synthesis(w[2:3])
    assert batch.shape == (5, 3, 64, 64) and float(batch.abs().max()) <= 1.0
    # BatchNorm runs on its stored statistics: the batch around an image does not change it (up to the
    # float rounding of another batch shape)
    torch.testing.assert_close(alone[0], batch[2], atol=1e-5, rtol=0)


def test_saved_and_tutorial_checkpoints_load(generator: Generator, tmp_path: Path) -> None:
    again = Generator.from_file(generator.save(tmp_path / "g.pt"))
    z = torch.randn(2, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again(z), generator(z), atol=0, rtol=0)
    torch.manual_seed(0)  # a 32 px tutorial generator of another width, saved the tutorial's way
    small = dcgan.DCGANGenerator(z_dim=16, ngf=8, num_layers=4)
    state = {k: v for k, v in small.state_dict().items() if k.startswith("main.")}
    torch.save({dcgan.CHECKPOINT_KEY: state}, tmp_path / "tutorial.tar")
    loaded = Generator.from_file(tmp_path / "tutorial.tar")
    assert (loaded.z_dim, loaded.img_resolution, loaded.network.main[0].out_channels) == (16, 32, 32)


def test_a_missing_or_other_package_is_one_line_with_the_fix() -> None:
    card = get_card(NAME)
    with pytest.raises(SynthdbError, match=r"pip install --no-deps gan-face-generate==1\.1\.1$"):
        zoo.installed_file(replace(card, package="synthdb_absent_package"))
    with pytest.raises(SynthdbError, match="sha256 differs"):
        zoo.installed_file(replace(card, sha256="0" * 64))


def test_framing_preset_is_where_mtcnn_finds_the_faces(generator: Generator, mtcnn: MtcnnDetector) -> None:
    """The digiface64 preset (measured once on 256 faces) against a fresh measurement on 48 others."""
    z = torch.randn(48, 100, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        pixels = (generator.synthesis(generator.mapping(z)).clamp(-1, 1) + 1) * 127.5
    big = F.interpolate(pixels, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 255)
    found = mtcnn.detect([img.round().byte().permute(1, 2, 0).numpy() for img in big])
    single = [f.faces[0].points for f in found if len(f.faces) == 1]
    assert len(single) >= 0.9 * len(found)
    measured = (np.mean(single, axis=0) - 1.5) / 4  # back to 64 px, pixel centres at integers
    preset = get_preset("digiface64")
    assert generator_preset(generator.framing, 64) is preset
    assert np.abs(measured - np.array(preset.points)).max() < 1.5


@pytest.mark.slow
def test_langevin_separates_identities_and_keeps_faces(sqlite_ctx: Context, mtcnn: MtcnnDetector) -> None:
    """Default settings, 12 identities: more pairs above the threshold and a larger minimum angle than
    random sampling from the same seed, and the references stay faces."""
    threshold = defaults.threshold(defaults.EMBEDDER)
    stored = {}
    for algorithm in ("random", "langevin"):
        params = ReferenceParams(name=algorithm, algorithm=algorithm, num_identities=12, batch_size=12)
        generate_references(sqlite_ctx, params)
        e, w = committed(sqlite_ctx, algorithm).vectors, committed(sqlite_ctx, algorithm, "latent").vectors
        stored[algorithm] = (pair_angles(e), torch.from_numpy(w))
    (before, _), (after, w) = stored["random"], stored["langevin"]
    assert (after > threshold).mean() > (before > threshold).mean()
    assert after.min() > before.min()
    assert one_face_fraction(zoo.generator(None, NAME), w, mtcnn) >= 0.9


def test_ict_accepts_only_distant_identities_within_its_budget(sqlite_ctx: Context) -> None:
    threshold = defaults.threshold(defaults.EMBEDDER)
    generate_references(sqlite_ctx, ReferenceParams(name="ict", algorithm="ict", num_identities=6))
    e = committed(sqlite_ctx, "ict").vectors
    assert len(e) == 6 and pair_angles(e).min() >= threshold
    strict = ReferenceParams(name="strict", algorithm="ict", num_identities=6, ict=0.7, max_candidates=3)
    with pytest.raises(SynthdbError, match="--algorithm langevin") as refused:
        generate_references(sqlite_ctx, strict)
    drawn = int(re.search(r"after (\d+) candidates", str(refused.value)).group(1))
    assert drawn <= 6 * 3 + strict.batch_size and "\n" not in str(refused.value)


@pytest.mark.slow
def test_dispersion_keeps_identity_while_latents_spread(sqlite_ctx: Context) -> None:
    threshold = defaults.threshold(defaults.EMBEDDER)
    generate_references(sqlite_ctx, ReferenceParams(name="refs", num_identities=6, batch_size=6))
    run_id = generate_variations(
        sqlite_ctx,
        VariationParams(name="vars", references="refs", num_variations=4, batch_size=24, iterations=10),
    )
    vectors = {}
    for name in ("refs", "vars"):
        found = committed(sqlite_ctx, name)
        label_of = identity_labels(sqlite_ctx.catalog, found.identity_ids)
        labels = np.array([label_of[int(i)] for i in found.identity_ids])
        vectors[name] = (labels, torch.from_numpy(found.vectors))
    (ref_labels, ref_e), (var_labels, var_e) = vectors["refs"], vectors["vars"]
    d = angle(var_e, ref_e).numpy()
    assert (ref_labels[d.argmin(axis=1)] == var_labels).mean() >= 0.95  # nearest to their own reference
    own = [int(np.flatnonzero(ref_labels == label)[0]) for label in var_labels]
    assert (d[np.arange(len(own)), own] < threshold).mean() >= 0.9  # still the same person
    stats = units.read_stats(sqlite_ctx, run_id)
    assert stats[-1]["w2wd_avg"] > stats[0]["w2wd_avg"]  # latent spread within an identity grows


@pytest.mark.slow
def test_projection_of_a_real_photo_moves_towards_its_identity(generator: Generator, faces_dir: Path) -> None:
    embedder = zoo.embedder(None, defaults.EMBEDDER)
    mtcnn = zoo.detector(None, "mtcnn")
    photo = torch.from_numpy(load_image(faces_dir / "obama_01.jpg").copy()).permute(2, 0, 1)[None].float()
    native = generator_preset(generator.framing, generator.img_resolution)
    target = Cropper("mtcnn", native, detector=mtcnn, value_range=(0.0, 255.0))(photo)[0] / 127.5 - 1
    truth = embedder.embed(Cropper("mtcnn", "dlib150", detector=mtcnn, value_range=(0.0, 255.0))(photo)[0])
    projector = Projector(generator, embedder, ProjectionParams(name="p", steps=20, w_avg_samples=1000))
    result = projector.project(target, ["obama"])
    pipeline = Pipeline(generator, embedder)
    with torch.no_grad():
        start = float(angle(pipeline.forward(torch.zeros(1, 100)), truth))
        end = float(angle(pipeline.forward(result.w), truth))
    assert end < start and result.final_loss[0] < result.history["loss"][0][0]
    assert math.isfinite(end)


@pytest.mark.slow
def test_disco_and_covariates_run_on_its_latent_space(sqlite_ctx: Context) -> None:
    """Direction sets are per generator: with one for dcgan-digiface's 100-d space (planted here; analysis
    needs Multi-PIE projections), DisCo and the covariate edits run on real faces too."""
    from tests.latent.test_directions import planted_set

    planted_set("dirs", generator=NAME, dim=100).save(sqlite_ctx.catalog)
    generate_references(sqlite_ctx, ReferenceParams(name="refs", algorithm="random", num_identities=2))
    for algorithm, count in (("disco", 2), ("covariates", 17)):
        params = VariationParams(
            name=algorithm, references="refs", algorithm=algorithm, directions="dirs", num_variations=2,
            iterations=1,
        )  # fmt: skip
        generate_variations(sqlite_ctx, params)
        w = committed(sqlite_ctx, algorithm, "latent").vectors
        assert w.shape == (2 * count, 100) and np.isfinite(w).all()
