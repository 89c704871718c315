"""synthdb's LPIPS VGG16 against the lpips package's own distances, the projector's 256 px area resize,
and the checks on its two weight files.

The golden numbers (``tests/data/lpips_golden.pt``, made outside this repository: see tests/data/README.md)
come from ``lpips.LPIPS(net='vgg')`` with the real v0.1 heads (the released ``vgg.pth``, stored byte for
byte in the golden file) on a VGG16 trunk whose weights follow the formula of :func:`formula_vgg16`
(ImageNet weights cannot be downloaded here; any trunk checks the arithmetic).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
import torch.nn.functional as F

from synthdb import zoo
from synthdb.catalog.schema import Model
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.latent.project import LpipsFeatures
from synthdb.nets import lpips
from synthdb.nets.cards import get_card

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "lpips_golden.pt"
#: (in, out) channels of VGG16's 13 convolutions, by their index in torchvision's ``features``
CONVS = {
    0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256),
    17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512),
}  # fmt: skip


def formula_vgg16(seed: int) -> dict[str, torch.Tensor]:
    """The golden trunk, in torchvision's key layout: one ``torch.Generator`` seeded ``seed``; per conv in
    index order, ``randn(out, in, 3, 3) * sqrt(2 / (9 in))`` then bias ``randn(out) * 0.01``."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for index, (c_in, c_out) in CONVS.items():
        state[f"features.{index}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g) * math.sqrt(
            2 / (9 * c_in)
        )
        state[f"features.{index}.bias"] = torch.randn(c_out, generator=g) * 0.01
    return state


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def lpips_weight_files(golden: dict, directory: Path) -> tuple[Path, Path]:
    """(trunk, heads) files as users have them: a torchvision-layout state dict and the released vgg.pth."""
    trunk, heads = directory / "vgg16-formula.pth", directory / "vgg.pth"
    torch.save(formula_vgg16(golden["seed"]), trunk)
    heads.write_bytes(golden["lin_file"].numpy().tobytes())
    return trunk, heads


def pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> [-1, 1], LPIPS's input range."""
    return images.float() / 127.5 - 1


@pytest.mark.slow
def test_lpips_matches_the_lpips_package(golden: dict, tmp_path: Path) -> None:
    trunk, heads = lpips_weight_files(golden, tmp_path)
    assert hashlib.sha256(heads.read_bytes()).hexdigest() == get_card("lpips-vgg-v0.1").sha256
    net = lpips.LPIPS.from_files(trunk, heads, get_card("lpips-vgg-v0.1").sha256)
    a, b = pixels(golden["a"]), pixels(golden["b"])
    with torch.no_grad():
        fa, fb = net(a), net(b)
        per_layer = torch.stack([(x - y).square().sum(1).mean((1, 2)) for x, y in zip(fa, fb, strict=True)])
        cd = lpips.distance(net(pixels(golden["c"])), net(pixels(golden["d"])))
    print(f"\nLPIPS ours {lpips.distance(fa, fb).numpy()} vs lpips {golden['distance'].numpy()}")
    torch.testing.assert_close(per_layer, golden["per_layer"], rtol=1e-5, atol=0)
    torch.testing.assert_close(lpips.distance(fa, fb), golden["distance"], rtol=1e-5, atol=0)
    torch.testing.assert_close(cd, golden["distance_cd"], rtol=1e-5, atol=0)  # not square, 40x72
    assert [f.shape[1:] for f in fa] == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)]

    # the projector's convention (reference spec 9.1): images over 256 px are area-resized to 256 first;
    # a 2x nearest upsampling of a 256 px image area-resizes back to it exactly
    big = F.interpolate(a[:1], scale_factor=4, mode="nearest")
    with torch.no_grad():
        resized = LpipsFeatures(net)(F.interpolate(big, scale_factor=2, mode="nearest"))
        assert resized[0].shape[2:] == (256, 256)
        torch.testing.assert_close(lpips.distance(resized, net(big)), torch.zeros(1), atol=1e-6, rtol=0)

    one = a[:1].requires_grad_(True)  # a loss: gradients reach the images, none the frozen network
    lpips.distance(net(one), [f[:1] for f in fb]).sum().backward()
    assert one.grad is not None and one.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in net.parameters())


def test_models_add_verifies_both_lpips_files(sqlite_ctx: Context, golden: dict, tmp_path: Path) -> None:
    trunk, heads = lpips_weight_files(golden, tmp_path)
    with pytest.raises(
        SynthdbError, match=r"vgg\.pth does not fit VGG16 .* 26 missing keys .* 5 unexpected keys"
    ):
        zoo.add(sqlite_ctx, "vgg16-imagenet", heads)
    with pytest.raises(SynthdbError, match="but the lpips-vgg-v0.1 card expects"):
        zoo.add(sqlite_ctx, "lpips-vgg-v0.1", trunk)
    with torch.no_grad():  # torchvision's file also holds the classifier, which is not read
        state = {**formula_vgg16(golden["seed"]), "classifier.6.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "with-classifier.pth")
    assert (
        zoo.add(sqlite_ctx, "vgg16-imagenet", tmp_path / "with-classifier.pth").name
        == "vgg16-397923af.pth"
    )
    assert zoo.add(sqlite_ctx, "lpips-vgg-v0.1", heads).read_bytes() == heads.read_bytes()
    with sqlite_ctx.catalog.engine.connect() as conn:
        rows = conn.execute(sa.select(Model.name, Model.kind, Model.architecture).order_by(Model.name)).all()
    assert [tuple(r) for r in rows] == [
        ("lpips-vgg-v0.1", "perceptual", "lpips_vgg_lin"),
        ("vgg16-imagenet", "perceptual", "vgg16"),
    ]

    del state["features.28.weight"]  # a trunk that stops early
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(SynthdbError, match=r"short\.pth does not fit VGG16 .* 1 missing keys \(features\.28"):
        lpips.load_vgg16(tmp_path / "short.pth")
    released = torch.load(heads, map_location="cpu", weights_only=True)  # CUDA-saved: needs the map
    torch.save({**released, "lin2.model.1.weight": -released["lin2.model.1.weight"]}, tmp_path / "neg.pth")
    with pytest.raises(SynthdbError, match=r"neg\.pth: lin2\.model\.1\.weight has negative weights"):
        lpips.load_heads(tmp_path / "neg.pth")
    alex = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(alex, tmp_path / "alex.pth")
    with pytest.raises(SynthdbError, match=r"lin1\.model\.1\.weight has shape \(1, 192, 1, 1\), not"):
        lpips.load_heads(tmp_path / "alex.pth")
