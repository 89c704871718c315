"""Workspace model registry (``synthdb models``), the ``Embedder`` API and ``synthdb crop``."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch

from synthdb import models
from synthdb.catalog.schema import Model
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.faces.embed import Embedder, angle
from synthdb.nets.iresnet import IResNet


def _iresnet_file(path: Path, depth: int = 34) -> Path:
    torch.manual_seed(0)
    torch.save(IResNet(depth).state_dict(), path)
    return path


def test_add_verifies_copies_and_registers(sqlite_ctx: Context, tmp_path: Path) -> None:
    weights = _iresnet_file(tmp_path / "mine.pth")
    assert models.weights_path(sqlite_ctx, models.get_card("iresnet34")) is None
    dest = models.add(sqlite_ctx, "iresnet34", weights)
    assert dest.parent == sqlite_ctx.ws.models_dir and dest.read_bytes() == weights.read_bytes()
    with sqlite_ctx.catalog.session() as session:
        row = session.scalars(sa.select(Model).where(Model.name == "iresnet34")).one()
        assert (row.kind, row.architecture, row.weights_path) == ("embedder", "iresnet34", str(dest))
    ready = {s.card.name: s for s in models.status(sqlite_ctx)}
    assert ready["iresnet34"].weights == dest and ready["iresnet34"].registered
    assert ready["dlib-resnet"].weights is not None  # embedded: always here
    embedder = Embedder.load("iresnet34", dest)
    assert embedder.embed(torch.rand(2, 3, 112, 112) * 255).shape == (2, 512)


def test_add_refuses_wrong_files(sqlite_ctx: Context, tmp_path: Path) -> None:
    other = _iresnet_file(tmp_path / "r18.pth", depth=18)
    with pytest.raises(SynthdbError, match="missing"):  # another architecture: keys do not match
        models.add(sqlite_ctx, "iresnet34", other)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(_iresnet_file(tmp_path / "ok.pth").read_bytes()[:1000])
    with pytest.raises(SynthdbError, match="cut.pth"):
        models.add(sqlite_ctx, "iresnet34", truncated)
    with pytest.raises(SynthdbError, match="ships with the installed package"):
        models.add(sqlite_ctx, "dlib-resnet", other)
    with pytest.raises(SynthdbError, match="unknown model 'nope'"):
        models.add(sqlite_ctx, "nope", other)
    assert not sqlite_ctx.ws.models_dir.exists() or not any(sqlite_ctx.ws.models_dir.iterdir())
    with sqlite_ctx.catalog.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Model)).scalar_one() == 0


@pytest.mark.parametrize(
    ("hostile", "message"),
    [
        ("ndarray of objects from a buffer", r"a numpy dtype 'O8': only numbers are read"),
        ("module DAG of 2**30 paths", r"is a module already met elsewhere in the tree"),
        ("stride-0 expansion", r"views more than its storage"),
        ("zip bomb", r"declares 268,4\d\d,\d\d\d bytes of content in a [\d,]+-byte zip"),
        ("saved num_layers=300000", r"mapping_kwargs\.num_layers = 300000, expected an integer in \[1, 32\]"),
        ("stylegan3 for a stylegan2 card", r"holds a stylegan3-t network, but stylegan2-ffhq-256 is a"),
    ],
)
def test_add_loads_generator_files_before_registering(
    ctx: Context, tmp_path: Path, hostile: str, message: str
) -> None:
    """A generator card's file is loaded (Generator.from_file, with every bound of a load) before it is copied
    or registered, as embedders are: a crafted or foreign file leaves no file and no row; a sound one is
    added."""
    from synthdb.nets.generator import TINY, Generator
    from tests.test_hostile_pickles import PICKLES, saved_generator, zip_bomb

    path = tmp_path / "weights.bin"
    if hostile in PICKLES:
        path.write_bytes(PICKLES[hostile][0])
    elif hostile == "zip bomb":
        path.write_bytes(zip_bomb())
    elif hostile == "saved num_layers=300000":
        kwargs = {**TINY["stylegan2-tiny"].kwargs, "mapping_kwargs": {"num_layers": 300_000}}
        path.write_bytes(saved_generator(kwargs=kwargs))
    else:
        Generator.tiny("stylegan3-tiny").save(path)
    with pytest.raises(SynthdbError, match=message) as refused:
        models.add(ctx, "stylegan2-ffhq-256", path)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(str(path.resolve()))
    assert not ctx.ws.models_dir.exists() or not any(ctx.ws.models_dir.iterdir())
    with ctx.catalog.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Model)).scalar_one() == 0

    sound = Generator.tiny("stylegan2-tiny").save(tmp_path / "sound.pt")
    dest = models.add(ctx, "stylegan2-ffhq-256", sound)
    assert dest.read_bytes() == sound.read_bytes()
    with ctx.catalog.session() as session:
        row = session.scalars(sa.select(Model).where(Model.name == "stylegan2-ffhq-256")).one()
        assert (row.kind, row.architecture, row.weights_path) == ("generator", "stylegan2", str(dest))


def test_fetch_fails_fast_offline(sqlite_ctx: Context) -> None:
    with pytest.raises(SynthdbError, match="synthdb models add"):
        models.fetch(sqlite_ctx, "stylegan2-ffhq-256", progress=False)


def test_embedder_api() -> None:
    embedder = Embedder.load("dlib-resnet")
    assert (embedder.dims, embedder.preset, embedder.size) == (128, "dlib150", 150)
    crops = (torch.rand(3, 3, 150, 150) * 255).requires_grad_(True)
    vectors = embedder.embed(crops)
    vectors.sum().backward()
    assert vectors.shape == (3, 128) and crops.grad is not None and crops.grad.abs().sum() > 0
    assert all(p.grad is None for p in embedder.net.parameters())
    numpy_vectors = embedder.embed_numpy(
        crops.detach().round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    )
    assert numpy_vectors.shape == (3, 128)
    with pytest.raises(ValueError, match=r"expects \(N, 3, 150, 150\)"):
        embedder.embed(torch.zeros(1, 3, 112, 112))


def test_angle_is_the_papers_distance() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [-1.0, 0.0]])
    expected = np.array([[0.0, np.pi], [np.pi / 2, np.pi / 2]])
    np.testing.assert_allclose(angle(a, b).numpy(), expected, atol=1e-3)
    assert Embedder.distance is angle
    x = torch.tensor([[1.0, 0.0]], requires_grad=True)
    angle(x, x).sum().backward()
    assert torch.isfinite(x.grad).all()  # identical vectors keep a finite gradient


def test_crop_cli(faces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "crops"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synthdb.cli.main",
            "crop",
            str(faces_dir / "obama_01.jpg"),
            str(faces_dir / "noface_01.jpg"),
            "--from",
            "mtcnn",
            "--to",
            "arcface",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1  # one of the two has no face
    assert "1 of 2 images cropped" in proc.stdout and "noface_01.jpg: no face found" in proc.stdout
    from PIL import Image

    with Image.open(out / "obama_01.png") as crop:
        assert crop.size == (112, 112)
