"""``synthdb show SAMPLE`` on real photos embedded with dlib-resnet and on generated references."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthdb.analysis.query import query
from synthdb.analysis.show import show_sample
from synthdb.catalog.datasets import get_dataset
from synthdb.context import Context
from synthdb.errors import SynthdbError
from tests.conftest import FACES, CliRun


@pytest.fixture(scope="module")
def shown(tmp_path_factory: pytest.TempPathFactory) -> Context:
    """``photos``: two obama photos and a face-less one, embedded; ``refs``: 2 random references of the
    untrained stylegan2-tiny (latents and embeddings, made by a run with seed 5)."""
    from synthdb.admin import init_workspace
    from synthdb.embed_dataset import embed_dataset
    from synthdb.generate.params import ReferenceParams
    from synthdb.generate.references import generate_references
    from synthdb.sources.registry import import_named

    tmp = tmp_path_factory.mktemp("show")
    for folder, photo in (("obama", "obama_01.jpg"), ("obama", "obama_02.jpg"), ("nobody", "noface_01.jpg")):
        (tmp / "photos" / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FACES / photo, tmp / "photos" / folder / photo)
    ctx = init_workspace(tmp / "ws", models_dir=str(tmp / "models"))
    import_named(ctx, "imagefolder", tmp / "photos", name="photos")
    embed_dataset(ctx, "photos", "dlib-resnet", "dlib", unit_size=64, workers=0, quiet=True)
    params = ReferenceParams("refs", 2, algorithm="random", generator="stylegan2-tiny", seed=5, device="cpu")
    generate_references(ctx, params)
    yield ctx
    ctx.close()


def test_a_photo_its_image_embedding_and_crop(shown: Context, tmp_path: Path) -> None:
    view = show_sample(shown, "obama/obama_02.jpg", crop_out=str(tmp_path / "crops"))
    assert (view.sample.dataset, view.sample.identity, view.sample.role) == ("photos", "obama", "genuine")
    with Image.open(FACES / "obama_02.jpg") as image:
        assert view.image_state == "readable" and view.image_size == image.size
    (embedding,) = view.vectors
    raw = (
        query(shown, f"SELECT embedding FROM embeddings WHERE sample_id = {view.sample.id}")
        .column(0)[0]
        .as_py()
    )
    assert (embedding.space, embedding.dims, embedding.detector) == ("dlib-resnet", 128, "dlib")
    assert embedding.norm == pytest.approx(float(np.linalg.norm(np.asarray(raw, np.float64))), abs=1e-6)
    assert view.issues == [] and view.made_by["kind"] == "import"
    (crop,) = view.crops
    with Image.open(crop) as image:
        assert image.size == (150, 150) and crop.parent.name == "dlib-resnet"  # dlib-resnet's dlib150 preset


def test_a_photo_without_a_face_shows_its_issue(shown: Context) -> None:
    view = show_sample(shown, "nobody/noface_01.jpg", dataset="photos")
    assert view.vectors == [] and [i.kind for i in view.issues] == ["no_face"]
    assert view.issues[0].space == "dlib-resnet"
    with pytest.raises(SynthdbError, match="says how its image was cropped: nothing to write"):
        show_sample(shown, "nobody/noface_01.jpg", crop_out="/proc/nope")  # no embedding: nothing to crop


def test_a_generated_reference_shows_the_run_seed_and_latents(shown: Context) -> None:
    sample_id = query(shown, "SELECT min(sample_id) FROM latents WHERE dataset = 'refs'").column(0)[0].as_py()
    view = show_sample(shown, str(sample_id))
    assert view.sample.key == "00000/reference" and view.image_state == "no image recorded"
    assert view.made_by["kind"] == "references" and view.made_by["algorithm"] == "random"
    assert view.made_by["seed"] == 5
    latents = {v.column: v for v in view.vectors if v.content == "latent"}
    w = query(shown, f"SELECT w FROM latents WHERE sample_id = {sample_id}").column(0)[0].as_py()
    assert set(latents) == {"w", "z"} and latents["w"].dims == 512 and latents["w"].space == "stylegan2-tiny"
    assert latents["w"].norm == pytest.approx(float(np.linalg.norm(np.asarray(w, np.float64))), rel=1e-6)
    assert [v.space for v in view.vectors if v.content == "embedding"] == ["dlib-resnet"]


def test_unknown_and_ambiguous_samples_are_one_line(shown: Context) -> None:
    with pytest.raises(SynthdbError, match="no sample 'nope': pass a sample id or key"):
        show_sample(shown, "nope")
    with pytest.raises(SynthdbError, match="no sample '999999'"):
        show_sample(shown, "999999")
    for not_an_id in ("9" * 30, "\u0663"):  # beyond int64 (was a traceback), an Arabic-Indic digit
        with pytest.raises(SynthdbError, match="no sample"):
            show_sample(shown, not_an_id)
    with pytest.raises(SynthdbError, match="no sample 'obama/obama_01.jpg' in dataset 'refs'"):
        show_sample(shown, "obama/obama_01.jpg", dataset="refs")


def test_an_image_swapped_for_a_link_out_or_a_fifo_is_not_read(shown: Context, tmp_path: Path) -> None:
    """The image file replaced by a symlink to a file outside the dataset's root, then by a FIFO: the view
    says so and reads neither (a FIFO would block a reader forever)."""
    image = Path(get_dataset(shown.catalog, "photos").root) / "obama" / "obama_01.jpg"
    saved = image.read_bytes()
    outside = tmp_path / "secret.jpg"
    shutil.copyfile(FACES / "biden_01.jpg", outside)
    try:
        image.unlink()
        image.symlink_to(outside)
        linked = show_sample(shown, "obama/obama_01.jpg")
        image.unlink()
        os.mkfifo(image)
        fifo = show_sample(shown, "obama/obama_01.jpg")
    finally:
        image.unlink()
        image.write_bytes(saved)
    assert "leads outside" in linked.image_state and linked.image_size is None
    assert "not a regular file" in fifo.image_state and fifo.image_size is None


def test_cli_show(shown: Context, synthdb_cli: CliRun) -> None:

    out = synthdb_cli("show", "obama/obama_01.jpg", ws=str(shown.ws.root))
    assert out.exit_code == 0, out.output
    assert (
        "embedding dlib-resnet" in out.output
        and "128 dims, norm" in out.output
        and "cropped by dlib" in out.output
    )
    assert "readable" in out.output and "made by" in out.output
    missing = synthdb_cli("show", "nope", ws=str(shown.ws.root))
    assert missing.exit_code == 1 and missing.output.count("\n") == 1 and missing.output.startswith("error: ")
