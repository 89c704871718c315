"""Embedding networks, the safe weights loader, model cards and downloads.

No real weights are downloaded: every network here is random-initialised with a fixed seed, saved in its
upstream file layout (arcface_torch plain dict, AdaFace Lightning container, facenet-pytorch dict with its
classifier), loaded back through the card factory and compared with the network it was saved from. The
expected key layouts are written out independently of synthdb's modules, from the upstream definitions.
Downloads only ever talk to 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.resources
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from synthdb.errors import SynthdbError
from synthdb.files import sha256_hex
from synthdb.nets import cards
from synthdb.nets.adaface import AdaFaceIR
from synthdb.nets.cards import EMBEDDERS, build_embedder, get_card, list_cards, parse_card
from synthdb.nets.fetch import fetch_weights
from synthdb.nets.iresnet import NIZHIB_BN_EPS, IResNet
from synthdb.nets.weights import load_state_dict

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
WIDTHS = (64, 128, 256, 512)
STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}


def arcface_torch_keys(units: tuple[int, ...]) -> set[str]:
    """State-dict keys of insightface arcface_torch ``iresnet`` (and nizhib's port) for these stage units."""
    keys = ["conv1.weight", "prelu.weight", *(f"bn1.{s}" for s in BN)]
    for stage, count in enumerate(units, start=1):
        for unit in range(count):
            p = f"layer{stage}.{unit}."
            keys += [p + "conv1.weight", p + "conv2.weight", p + "prelu.weight"]
            keys += [f"{p}{bn}.{s}" for bn in ("bn1", "bn2", "bn3") for s in BN]
            if unit == 0:  # every stage starts with stride 2, so with a projected shortcut
                keys += [p + "downsample.0.weight", *(f"{p}downsample.1.{s}" for s in BN)]
    keys += [*(f"bn2.{s}" for s in BN), "fc.weight", "fc.bias", *(f"features.{s}" for s in BN)]
    return set(keys)


def adaface_keys(units: tuple[int, ...]) -> set[str]:
    """State-dict keys of AdaFace's ``net.Backbone(mode='ir')`` for these stage units."""
    keys = ["input_layer.0.weight", "input_layer.2.weight", *(f"input_layer.1.{s}" for s in BN)]
    index, in_channel = 0, WIDTHS[0]
    for width, count in zip(WIDTHS, units, strict=True):
        for unit in range(count):
            p = f"body.{index}."
            keys += [p + "res_layer.1.weight", p + "res_layer.3.weight", p + "res_layer.4.weight"]
            keys += [f"{p}res_layer.{i}.{s}" for i in (0, 2, 5) for s in BN]
            if unit == 0 and in_channel != width:  # same width: a parameterless MaxPool2d(1, 2) shortcut
                keys += [p + "shortcut_layer.0.weight", *(f"{p}shortcut_layer.1.{s}" for s in BN)]
            index += 1
        in_channel = width
    keys += [*(f"output_layer.0.{s}" for s in BN), "output_layer.3.weight", "output_layer.3.bias"]
    keys += [f"output_layer.4.{s}" for s in ("running_mean", "running_var", "num_batches_tracked")]
    return set(keys)


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, including BatchNorm statistics and PReLU slopes, so eval is not trivial."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                if m.affine:
                    m.weight.normal_(1, 0.1)
                    m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.PReLU):
                m.weight.uniform_(0.1, 0.4)
    return module.eval()


def faces(size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def assert_frozen_and_differentiable(net: nn.Module, x: torch.Tensor) -> None:
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    x = x.clone().requires_grad_(True)
    net(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


# --- key layouts -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [18, 34, 50, 100])
def test_iresnet_has_the_arcface_torch_key_layout(depth: int) -> None:
    with torch.device("meta"):
        state = IResNet(depth).state_dict()
    assert set(state) == arcface_torch_keys(STAGES[depth])
    assert state["fc.weight"].shape == (512, 512 * 7 * 7)


@pytest.mark.parametrize(("depth", "units"), [(18, STAGES[18]), (50, STAGES[50]), (101, STAGES[100])])
def test_adaface_has_the_official_key_layout(depth: int, units: tuple[int, ...]) -> None:
    with torch.device("meta"):
        state = AdaFaceIR(depth).state_dict()
    assert set(state) == adaface_keys(units)
    assert state["output_layer.3.weight"].shape == (512, 512 * 7 * 7)


# --- round trips through the card factory ------------------------------------------------------------------


@pytest.mark.parametrize(("depth", "card_name", "bn_eps"), [
    (18, "iresnet50", None),  # arcface_torch: a plain state dict, BatchNorm eps 1e-5
    (50, "iresnet50", NIZHIB_BN_EPS),  # nizhib's port, as its card describes it
])
@pytest.mark.slow
def test_iresnet_file_loads_and_reproduces(tmp_path: Path, depth: int, card_name: str,
                                           bn_eps: float | None) -> None:
    source = randomised(IResNet(depth, **({} if bn_eps is None else {"bn_eps": bn_eps})), seed=depth)
    path = tmp_path / "iresnet.pth"
    torch.save(source.state_dict(), path)
    card = get_card(card_name)
    if bn_eps is None:
        card = replace(card, architecture=f"iresnet{depth}", options={})
    net = build_embedder(card, path)
    x = faces(112)
    with torch.no_grad():
        expected, out = source(x), net(x)
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    assert torch.equal(out, expected)
    assert not torch.allclose(out.norm(dim=1), torch.ones(2))  # IResNet features are not normalised
    if depth == 18:  # one backward per family keeps the suite quick on CPU
        assert_frozen_and_differentiable(net, x)


def test_iresnet_file_without_batchnorm_counters_loads(tmp_path: Path) -> None:
    """MXNet exports and pre-1.0 torch files have no num_batches_tracked; eval never reads them."""
    source = randomised(IResNet(18), seed=3)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    card = replace(get_card("iresnet34"), architecture="iresnet18", options={})
    with torch.no_grad():
        assert torch.equal(build_embedder(card, tmp_path / "old.pth")(faces(112)), source(faces(112)))


@pytest.mark.parametrize(("depth", "card_name"), [
    (18, "adaface_ir18_webface4m"),
    (50, "adaface_ir50_webface4m"),
])
@pytest.mark.slow
def test_adaface_lightning_checkpoint_loads_and_reproduces(tmp_path: Path, depth: int,
                                                           card_name: str) -> None:
    source = randomised(AdaFaceIR(depth), seed=depth)
    lightning = {
        "epoch": 25,
        "global_step": 1000,
        "pytorch-lightning_version": "1.8.6",
        "state_dict": {**{f"model.{k}": v for k, v in source.state_dict().items()},
                       "head.kernel": torch.randn(512, 7), "head.t": torch.zeros(1)},
    }
    path = tmp_path / f"{card_name}.ckpt"
    torch.save(lightning, path)
    net = build_embedder(card_name, path)
    x = faces(112)
    with torch.no_grad():
        out = net(x)
        assert torch.equal(out, source(x))
        torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
        # the module flips RGB to the BGR order AdaFace was trained on
        bgr = source.output_layer(source.body(source.input_layer(x[:, [2, 1, 0]])))
        torch.testing.assert_close(out, bgr / bgr.norm(dim=1, keepdim=True), rtol=0, atol=1e-6)
    if depth == 18:  # one backward per family keeps the suite quick on CPU
        assert_frozen_and_differentiable(net, x)


@pytest.mark.slow
def test_facenet_file_with_classifier_loads_and_reproduces(tmp_path: Path) -> None:
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    source = randomised(InceptionResnetV1(classify=True, num_classes=8631), seed=5)
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(source.state_dict(), path)  # as facenet-pytorch's release: logits.* included
    net = build_embedder("facenet-vggface2", path)
    source.classify = False
    x = faces(160)
    with torch.no_grad():
        out = net(x)
        assert torch.equal(out, source(x))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    assert_frozen_and_differentiable(net, x)


# --- files that must be refused ----------------------------------------------------------------------------


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.pt"
    torch.save({"layer.weight": torch.randn(64, 64), "layer.bias": torch.randn(64)}, path)
    return path


def test_other_architecture_is_refused_with_key_counts(tmp_path: Path) -> None:
    path = tmp_path / "adaface.pth"
    with torch.device("meta"):
        keys = AdaFaceIR(18).state_dict().keys()
    torch.save({k: torch.zeros(1) for k in keys}, path)  # shapes do not matter: the keys already differ
    card = replace(get_card("iresnet34"), architecture="iresnet18", options={})
    missing = [k for k in arcface_torch_keys(STAGES[18]) if not k.endswith("num_batches_tracked")]
    with pytest.raises(SynthdbError, match=rf"does not fit iresnet18: {len(missing)} missing keys \(.+\) "
                                           rf"and {len(keys)} unexpected keys \(.*input_layer"):
        build_embedder(card, path)


def test_wrong_shapes_are_refused(tmp_path: Path) -> None:
    state = IResNet(18).state_dict()
    state["fc.weight"] = torch.zeros(512, 100)
    torch.save(state, tmp_path / "w.pth")
    card = replace(get_card("iresnet34"), architecture="iresnet18", options={})
    with pytest.raises(SynthdbError, match=r"1 tensors have the wrong shape .*fc\.weight \(512, 100\) vs "
                                           r"\(512, 25088\)"):
        build_embedder(card, tmp_path / "w.pth")


def test_truncated_file_is_refused(small_file: Path) -> None:
    small_file.write_bytes(small_file.read_bytes()[: small_file.stat().st_size // 2])
    with pytest.raises(SynthdbError, match=r"small\.pt is truncated or corrupt .*models add iresnet50"):
        load_state_dict(small_file, model="iresnet50")


@pytest.mark.parametrize(("content", "message"), [
    (bytes(range(7, 250)) * 40, "is not a file torch.save wrote"),
    (b"<!DOCTYPE html><html><body>Google Drive - Virus scan warning</body></html>", "not a file torch.save"),
    (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.", "is a plain Python pickle"),
    (b"", "is empty"),
])
def test_non_torch_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(SynthdbError, match=message):
        load_state_dict(path)


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_needs_os_system_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"layer.weight": torch.zeros(2), "payload": _RunsCommand(marker)}, path)
    with pytest.raises(SynthdbError, match=r"needs the Python global \w+\.system; "
                                           r".*weights_only=True\) refuses"):
        load_state_dict(path)
    assert not marker.exists()


def test_sha_mismatch_and_missing_file_are_refused(small_file: Path) -> None:
    state = load_state_dict(small_file, sha256=sha256_hex(small_file))
    assert state.keys() == {"layer.weight", "layer.bias"}
    with pytest.raises(SynthdbError, match=r"has sha256 [0-9a-f]{64} but its model card says 0{64}"):
        load_state_dict(small_file, sha256="0" * 64)
    with pytest.raises(SynthdbError, match=r"nothing\.pt does not exist: .*synthdb models add NAME --file"):
        load_state_dict(small_file.with_name("nothing.pt"))


def test_containers_are_unwrapped_and_other_objects_refused(tmp_path: Path) -> None:
    tensor = torch.ones(3)
    torch.save({"state_dict": {"module.fc.weight": tensor}}, tmp_path / "ddp.pt")
    assert load_state_dict(tmp_path / "ddp.pt", expected_keys={"fc.weight"}).keys() == {"fc.weight"}
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "training.pt")
    with pytest.raises(SynthdbError, match="holds a dict with keys epoch, optimizer, not a state dict"):
        load_state_dict(tmp_path / "training.pt")
    torch.save([tensor], tmp_path / "list.pt")
    with pytest.raises(SynthdbError, match="holds a list, not a state dict"):
        load_state_dict(tmp_path / "list.pt")


# --- model cards -------------------------------------------------------------------------------------------


def test_shipped_cards_parse_and_cover_the_known_networks() -> None:
    names = {c.name for c in list_cards()}
    assert names == {
        "dlib-resnet", "mtcnn", "dlib-5pt", "dlib-68pt", "iresnet34", "iresnet50", "iresnet100",
        "adaface_ir18_webface4m", "adaface_ir50_webface4m", "adaface_ir101_webface12m",
        "facenet-vggface2", "facenet-casia", "stylegan2-ffhq-1024", "stylegan2-ffhq-256",
        "stylegan3-t-ffhq-1024", "stylegan3-t-ffhqu-256", "stylegan3-r-ffhqu-256", "eg3d-ffhq512-128",
        "vgg16-imagenet", "lpips-vgg-v0.1",
        "stylegan2-rosinality-1024", "stylegan2-rosinality-256", "dcgan-digiface",
    }
    for card in list_cards():
        assert card.embedded or card.url.startswith("https://"), card.name
        if card.commercial_use == "unknown":
            assert "unknown" in card.notes, card.name  # the card says why
    assert {c.name for c in list_cards("generator")} >= {"eg3d-ffhq512-128"}
    assert get_card("dlib-68pt").commercial_use is False
    assert all(c.commercial_use is False for c in list_cards("generator"))
    assert all(get_card(f"iresnet{d}").options == {"bn_eps": NIZHIB_BN_EPS} for d in (34, 50, 100))
    for card in list_cards("embedder"):  # every embedder says where its verification threshold comes from
        assert 0 < card.threshold_rad < 2 and card.threshold_source, card.name


def test_cards_refuse_thresholds_and_settings_that_do_not_fit() -> None:
    text = (importlib.resources.files(cards.CARDS_PACKAGE) / "dlib-resnet.toml").read_text()
    with pytest.raises(SynthdbError, match="threshold_rad must be an angle"):
        cards.parse_card(text.replace("threshold_rad = 0.4027", "threshold_rad = 40.27"), "x.toml")
    with pytest.raises(SynthdbError, match="missing keys threshold_rad"):
        cards.parse_card(text.replace("threshold_rad = 0.4027\n", ""), "x.toml")
    with pytest.raises(SynthdbError, match="algorithm_defaults are for generator cards"):
        cards.parse_card(text + "\n[algorithm_defaults]\nlangevin_timestep = -0.1\n", "x.toml")
    generator = (importlib.resources.files(cards.CARDS_PACKAGE) / "dcgan-digiface.toml").read_text()
    with pytest.raises(SynthdbError, match="unknown algorithm_defaults langevin_steps"):
        cards.parse_card(generator.replace("langevin_timestep", "langevin_steps"), "x.toml")


def test_every_embedder_card_names_a_buildable_architecture() -> None:
    for card in list_cards("embedder"):
        if card.architecture == cards.DLIB_RESNET:
            continue
        with torch.device("meta"):
            net = EMBEDDERS[card.architecture].build(**card.options)
        x = torch.empty(1, 3, card.image_size, card.image_size, device="meta")
        assert net.eval()(x).shape == (1, card.output_dims), card.name


def test_card_lookup_and_factory_errors() -> None:
    with pytest.raises(SynthdbError, match=r"unknown model 'arcface'; known models: .*iresnet50"):
        get_card("arcface")
    with pytest.raises(SynthdbError, match="stylegan2-ffhq-256 is a generator, not an embedder"):
        build_embedder("stylegan2-ffhq-256", "x.pkl")


GOOD_CARD = """
name = "n"
kind = "embedder"
architecture = "iresnet18"
file = "n.pth"
url = ""
sha256 = ""
license = "MIT"
commercial_use = "unknown"
embedded = false
preset = "arcface"
image_size = 112
output_dims = 512
pixel_mean = 127.5
pixel_std = 128
threshold_rad = 1.4
threshold_source = "the reference's ICT"
"""


@pytest.mark.parametrize(("key", "value", "message"), [
    ("kind", '"embedder"', None),
    ("kind", '"classifier"', "kind must be one of generator, embedder, detector, landmarks"),
    ("colour", '"red"', "unknown keys colour"),
    ("output_dims", None, "missing keys output_dims"),
    ("sha256", '"ABC"', "sha256 must be 64 lowercase hex digits"),
    ("commercial_use", '"maybe"', 'commercial_use must be true, false or "unknown"'),
    ("image_size", "true", "image_size = True has the wrong type"),
    ("architecture", '"vit_b16"', "unknown embedder architecture 'vit_b16'"),
    ("embedded", "true", "embedded cards name the installed package"),
    ("url", '"ftp://x"', "url must be http"),
    ("name", "", "not valid TOML"),
])
def test_card_validation(key: str, value: str | None, message: str | None) -> None:
    lines = [line for line in GOOD_CARD.strip().splitlines() if not line.startswith(f"{key} =")]
    text = "\n".join(lines + ([] if value is None else [f"{key} = {value}"]))
    if message is None:
        assert parse_card(text, "n.toml").pixel_std == 128.0
    else:
        with pytest.raises(SynthdbError, match=f"model card n.toml.*{message}"):
            parse_card(text, "n.toml")


# --- downloads (127.0.0.1 only) ----------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a temporary directory: (base URL, directory)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_fetch_fails_fast_when_offline(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago, on this machine only
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/iresnet50-7f187506.pth"
    card = replace(get_card("iresnet50"), url=url)
    start = time.monotonic()
    with pytest.raises(SynthdbError, match=rf"cannot download iresnet50 from {url} .*looks offline.*"
                                           r"synthdb models add iresnet50 --file PATH"):
        fetch_weights(card, tmp_path / "models" / card.file, progress=False)
    assert time.monotonic() - start < 5.0
    assert not any((tmp_path / "models").iterdir())


def test_fetch_downloads_checks_and_reuses(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    payload = os.urandom(3 << 20)
    (root / "w.pth").write_bytes(payload)
    card = replace(get_card("iresnet50"), url=f"{base}/w.pth", file="w.pth",
                   sha256=hashlib.sha256(payload).hexdigest())
    models = tmp_path / "models"
    path = fetch_weights(card, models / card.file, progress=True)
    assert path == models / "w.pth" and path.read_bytes() == payload
    assert sorted(p.name for p in models.iterdir()) == ["w.pth"]  # no partial file left behind
    (root / "w.pth").unlink()
    assert fetch_weights(card, path, progress=False) == path  # verified copy present: no download


def test_fetch_refuses_a_sha_mismatch_and_web_pages(server: tuple[str, Path], tmp_path: Path) -> None:
    base, root = server
    (root / "w.pth").write_bytes(b"not what the card promised")
    (root / "page.html").write_text("<html>confirm download</html>")
    models = tmp_path / "models"
    card = replace(get_card("iresnet50"), url=f"{base}/w.pth", file="w.pth", sha256="0" * 64)
    with pytest.raises(SynthdbError, match=r"gave a file with sha256 [0-9a-f]{64}, but the iresnet50 card "
                                           r"says 0{64}.*nothing was saved"):
        fetch_weights(card, models / card.file, progress=False)
    with pytest.raises(SynthdbError, match=r"answered with a web page, not w\.pth .*"
                                           r"synthdb models add iresnet50"):
        fetch_weights(replace(card, url=f"{base}/page.html"), models / card.file, progress=False)
    assert not any(models.iterdir())


def test_fetch_explains_cards_without_a_download() -> None:
    with pytest.raises(SynthdbError, match="dlib-resnet ships with the installed package "
                                           "face_recognition_models"):
        fetch_weights(get_card("dlib-resnet"), "unused", progress=False)
    with pytest.raises(SynthdbError, match=r"iresnet50 has no download URL: copy iresnet50-7f187506\.pth"):
        fetch_weights(replace(get_card("iresnet50"), url=""), "unused", progress=False)
