"""Face detection, the landmark convention, alignment warps and file cropping, on real photos.

The photos are the repository's test photos (tests/data/faces, with provenance and licences). Each detector
runs once per photo (module-scoped fixtures). The parity test
compares our torch warp + torch ResNet against dlib's own aligned descriptor on every face dlib finds.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.geometry.transform import invert_affine_transform as invert_affine
from PIL import Image

from synthdb import zoo
from synthdb.crop_files import crop_images
from synthdb.errors import SynthdbError
from synthdb.faces.align import (
    PRESETS,
    Cropper,
    choose_algorithm,
    ffhq_align,
    ffhq_matrix,
    ffhq_quad,
    fixed_crop,
    fixed_crop_box,
    get_preset,
    template_matrix,
    warp,
)
from synthdb.faces.detect import DlibDetector, MtcnnDetector, dlib5_points, load_image
from synthdb.faces.geometry import DLIB_MEAN_FACE_5, estimate_similarity, transform_points
from synthdb.faces.landmarks import ImageFaces
from tests.conftest import FACES

DETECTORS = ("mtcnn", "dlib")


def _tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 255]."""
    return torch.from_numpy(img.copy()).permute(2, 0, 1).unsqueeze(0).float()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run this module's torch work on one thread.

    MTCNN is many small ops. With torch's default two OpenMP threads on a 2-core machine that other
    processes also load, the threads mostly wait on each other: this file took 167 s that way and 30 s with
    one thread (measured on the shared test machine).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def manifest() -> dict[str, str]:
    """file -> identity ('' for group photos and the no-face photo)."""
    with (FACES / "manifest.csv").open(newline="") as f:
        return {row["file"]: row["identity"] for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def faces_dir(manifest: dict[str, str]) -> Path:
    """The test photo folder, for tests that read files themselves."""
    return FACES


@pytest.fixture(scope="module")
def photos(manifest: dict[str, str]) -> dict[str, np.ndarray]:
    return {name: load_image(FACES / name) for name in manifest}


@pytest.fixture(scope="module")
def mtcnn() -> MtcnnDetector:
    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch is not installed")
    return zoo.detector(None, "mtcnn")


@pytest.fixture(scope="module")
def dlib_detector() -> DlibDetector:
    pytest.importorskip("dlib", reason="dlib-bin is not installed")
    return zoo.detector(None, "dlib")


@pytest.fixture(scope="module")
def found_mtcnn(mtcnn: MtcnnDetector, photos: dict[str, np.ndarray]) -> dict[str, ImageFaces]:
    return dict(zip(photos, mtcnn.detect(list(photos.values())), strict=True))


@pytest.fixture(scope="module")
def found_dlib(dlib_detector: DlibDetector, photos: dict[str, np.ndarray]) -> dict[str, ImageFaces]:
    return dict(zip(photos, dlib_detector.detect(list(photos.values())), strict=True))


@pytest.fixture(params=DETECTORS)
def found(request: pytest.FixtureRequest) -> dict[str, ImageFaces]:
    return request.getfixturevalue(f"found_{request.param}")


# ---------------------------------------------------------------------------------------------------------
# Detection on the real photos


def test_every_single_face_photo_has_exactly_one_face(found: dict[str, ImageFaces],
                                                      manifest: dict[str, str]) -> None:
    singles = [name for name, identity in manifest.items() if identity]
    assert len(singles) >= 25
    counts = {name: len(found[name].faces) for name in singles}
    assert all(found[name].ok for name in singles)
    assert {n: c for n, c in counts.items() if c != 1} == {}


def test_no_face_photo_and_group_photos(found: dict[str, ImageFaces]) -> None:
    assert found["noface_01.jpg"].ok and found["noface_01.jpg"].faces == ()
    groups = {name: len(r.faces) for name, r in found.items() if name.startswith("group_")}
    assert len(groups) == 3
    assert all(n >= 2 for n in groups.values()), groups


def test_landmark_convention_holds_for_every_face(found: dict[str, ImageFaces]) -> None:
    """Subject's left = image right; eyes above the nose above the mouth; faces largest first."""
    wrong = []
    for name, result in found.items():
        areas = [face.area for face in result.faces]
        assert areas == sorted(areas, reverse=True), name
        for face in result.faces:
            if not (face.eye_left[0] > face.eye_right[0] and face.mouth_left[0] > face.mouth_right[0]
                    and max(face.eye_left[1], face.eye_right[1]) < face.nose[1]
                    < min(face.mouth_left[1], face.mouth_right[1])):
                wrong.append((name, face.points.round(1).tolist()))
            assert face.points.dtype == np.float32 and face.points.shape == (5, 2)
    assert wrong == []


def test_detectors_agree_on_the_eyes(found_mtcnn: dict[str, ImageFaces], found_dlib: dict[str, ImageFaces],
                                     manifest: dict[str, str]) -> None:
    """The two backends' conversions land on the same eyes: a swapped or shifted convention would not."""
    for name, identity in manifest.items():
        if identity:
            a, b = found_mtcnn[name].largest, found_dlib[name].largest
            eye_distance = np.linalg.norm(b.eye_left - b.eye_right)
            assert np.linalg.norm(a.points[:2] - b.points[:2], axis=1).max() < 0.2 * eye_distance, name


def test_dlib_68_points_give_the_same_convention(photos: dict[str, np.ndarray]) -> None:
    pytest.importorskip("dlib", reason="dlib-bin is not installed")
    face = zoo.detector(None, "dlib-68pt").detect([photos["obama_01.jpg"]])[0].largest
    assert face.model == "dlib-68" and face.landmarks68.shape == (68, 2)
    np.testing.assert_allclose(face.eye_left, face.landmarks68[42:48].mean(0), atol=1e-4)
    np.testing.assert_allclose(face.mouth_right, face.landmarks68[48])
    assert face.eye_left[0] > face.eye_right[0] and face.mouth_left[0] > face.mouth_right[0]


def test_unreadable_file_is_an_error_naming_it(tmp_path: Path, mtcnn: MtcnnDetector, faces_dir: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(SynthdbError, match="broken.jpg"):
        load_image(broken)
    with pytest.raises(SynthdbError, match="no such file"):
        load_image(tmp_path / "missing.png")
    results = mtcnn.detect_files([broken, faces_dir / "seb_01.jpg"])
    assert not results[0].ok and "broken.jpg" in results[0].error and results[0].source == str(broken)
    assert results[1].ok and len(results[1].faces) == 1


def test_out_of_memory_stops_the_run_instead_of_failing_each_image(
    monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray]
) -> None:
    """A fault injected into facenet-pytorch's MTCNN: running out of memory says so once, in one line,
    rather than being recorded as a per-image detection error that would mark good photos as failed."""
    detector = MtcnnDetector()

    def exhausted(*_args: object, **_kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(detector._mtcnn, "detect", exhausted)
    with pytest.raises(SynthdbError, match=r"out of memory detecting faces in 2 images .*--device cpu"):
        detector.detect([photos["seb_01.jpg"], photos["seb_01.jpg"]])


def test_load_image_modes(tmp_path: Path) -> None:
    """RGBA is composited over black, grayscale and 16-bit become RGB uint8, EXIF orientation is applied."""
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 0
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (4, 6, 3) and img[0, 0].tolist() == [200] * 3 and img[1, 1].tolist() == [0] * 3
    Image.fromarray(np.full((4, 6), 77, np.uint8)).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (4, 6, 3)
    Image.fromarray(np.full((4, 6), 65535, np.uint16)).save(tmp_path / "w.png")
    assert load_image(tmp_path / "w.png").max() == 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (6, 4, 3)


# ---------------------------------------------------------------------------------------------------------
# Similarity estimation and warping


def _random_similarities(n: int, gen: torch.Generator) -> torch.Tensor:
    angle = (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 2 * math.pi
    scale = 0.2 + 3 * torch.rand(n, generator=gen, dtype=torch.float64)
    shift = (torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * 400
    c, s = torch.cos(angle) * scale, torch.sin(angle) * scale
    return torch.stack([torch.stack([c, -s, shift[:, 0]], 1), torch.stack([s, c, shift[:, 1]], 1)], 1)


def test_estimate_similarity_recovers_each_transform_of_a_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    truth = _random_similarities(8, gen)
    src = torch.rand(8, 5, 2, generator=gen, dtype=torch.float64) * 200
    dst = transform_points(src, truth)
    torch.testing.assert_close(estimate_similarity(src, dst), truth, rtol=0, atol=1e-9)
    # One shared template (K, 2) still gives one transform per image.
    template = torch.tensor(PRESETS["arcface"].points, dtype=torch.float64)
    moved = transform_points(template.expand(8, 5, 2), invert_affine(truth))
    torch.testing.assert_close(estimate_similarity(moved, template), truth, rtol=0, atol=1e-9)


def test_estimate_similarity_never_mirrors() -> None:
    src = torch.tensor(PRESETS["arcface"].points, dtype=torch.float64)
    mirrored = src * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    fit = estimate_similarity(src[None], mirrored)
    assert torch.linalg.det(fit[:, :, :2]).item() >= 0


def test_warp_matches_integer_shifts_and_lets_gradients_through() -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(3, 2, 40, 50, generator=gen, requires_grad=True)
    shift = torch.tensor([[[1.0, 0.0, -5.0], [0.0, 1.0, -7.0]]]).repeat(3, 1, 1)
    out = warp(images, shift, (20, 30))
    torch.testing.assert_close(out, images[:, :, 7:27, 5:35])
    # A strong shrink goes through the pyramid; gradients still reach the pixels and the matrix.
    matrix = torch.tensor([[[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]]).repeat(3, 1, 1).requires_grad_(True)
    (warp(images, shift, (20, 30)).sum() + warp(images, matrix, (4, 5)).square().sum()).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert matrix.grad is not None and matrix.grad.abs().sum() > 0


def test_warp_antialiases_large_shrinks() -> None:
    """A one-pixel checkerboard shrunk 8x should come out flat mid-grey; plain bilinear sampling hits only
    same-coloured pixels and turns it black."""
    yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
    board = ((yy + xx) % 2).float().view(1, 1, 512, 512) * 255
    matrix = torch.tensor([[[0.125, 0.0, 0.0], [0.0, 0.125, 0.0]]])
    plain = warp(board, matrix, (60, 60), antialias=False)
    smooth = warp(board, matrix, (60, 60))
    assert plain.max() < 1
    assert abs(smooth.mean().item() - 127.5) < 1 and smooth.std() < 1


# ---------------------------------------------------------------------------------------------------------
# dlib150 against dlib itself


def _dlib_shape(dlib: Any, predictor: Any, img: np.ndarray, box: tuple[float, ...]) -> Any:
    rect = dlib.rectangle(int(box[0]), int(box[1]), int(box[2]) - 1, int(box[3]) - 1)
    return predictor(img, rect)


def _dlib_chip_corners(dlib: Any, shape: Any) -> np.ndarray:
    """Image positions of chip pixels (0, 0), (149, 0), (149, 149) in dlib's chip (extract_image_chips)."""
    details = dlib.get_face_chip_details(shape, 150, 0.25)
    r, angle = details.rect, details.angle
    centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    corners = np.array([(r.left(), r.top()), (r.right(), r.top()), (r.right(), r.bottom())])
    return (corners - centre) @ rot.T + centre


def test_dlib150_template_reproduces_dlib_chip_geometry() -> None:
    """An exact mean-face shape at 3 image pixels per chip pixel: our chip corners vs dlib's, in pixels."""
    dlib = pytest.importorskip("dlib", reason="dlib-bin is not installed")
    parts = (0.25 + DLIB_MEAN_FACE_5) / 1.5 * 450 + np.array([100.0, 80.0])
    shape = dlib.full_object_detection(dlib.rectangle(100, 80, 550, 530),
                                       [dlib.point(round(x), round(y)) for x, y in parts])
    ours = template_matrix(torch.from_numpy(dlib5_points(parts)).double()[None], "dlib150")
    chip = torch.tensor([[(0.0, 0.0), (149.0, 0.0), (149.0, 149.0)]], dtype=torch.float64)
    corners = transform_points(chip, invert_affine(ours))[0].numpy()
    # dlib's chip is (450 - 1) / 449 / 3 ~ 0.45 % larger: about 1.4 px at the corners, ~0.3 % of 450 px.
    assert np.abs(corners - _dlib_chip_corners(dlib, shape)).max() < 0.005 * 450


@pytest.mark.slow
def test_dlib150_warp_gives_dlibs_descriptor(found_dlib: dict[str, ImageFaces],
                                             photos: dict[str, np.ndarray]) -> None:
    """Every face: our warp + torch ResNet vs dlib.face_recognition_model_v1.compute_face_descriptor."""
    dlib = pytest.importorskip("dlib", reason="dlib-bin is not installed")
    from synthdb.nets.dlib_resnet import load_dlib_resnet

    net = load_dlib_resnet(zoo.weights_path(None, "dlib-resnet"))
    predictor = dlib.shape_predictor(str(zoo.weights_path(None, "dlib-5pt")))
    facerec = dlib.face_recognition_model_v1(str(zoo.weights_path(None, "dlib-resnet")))
    cosines, corner_errors = {}, []
    for name, result in found_dlib.items():
        if not result.faces:
            continue
        image = _tensor(photos[name]).double()
        points = torch.from_numpy(np.stack([f.points for f in result.faces])).double()
        matrix = template_matrix(points, "dlib150")
        chips = warp(image.expand(len(points), -1, -1, -1), matrix, PRESETS["dlib150"].size)
        with torch.no_grad():
            ours = net(chips.float())
        chip = torch.tensor([[(0.0, 0.0), (149.0, 0.0), (149.0, 149.0)]], dtype=torch.float64)
        for k, face in enumerate(result.faces):
            shape = _dlib_shape(dlib, predictor, photos[name], face.box)
            reference = torch.tensor(facerec.compute_face_descriptor(photos[name], shape))
            cosines[f"{name}#{k}"] = torch.cosine_similarity(ours[k].double(), reference, 0).item()
            corners = transform_points(chip, invert_affine(matrix[k: k + 1]))[0].numpy()
            chip_width = 150 / math.sqrt(abs(np.linalg.det(matrix[k, :, :2].numpy())))
            corner_errors.append(np.abs(corners - _dlib_chip_corners(dlib, shape)).max() / chip_width)
    print(f"\ndlib150 parity over {len(cosines)} faces: min cosine {min(cosines.values()):.5f}, "
          f"worst chip-corner offset {max(corner_errors):.2%} of the chip width")
    assert len(cosines) >= 40
    assert min(cosines.values()) >= 0.99, sorted(cosines.items(), key=lambda kv: kv[1])[:3]
    assert max(corner_errors) < 0.03


# ---------------------------------------------------------------------------------------------------------
# Cropper and the other algorithms


def test_arcface_crops_via_mtcnn(found_mtcnn: dict[str, ImageFaces], photos: dict[str, np.ndarray]) -> None:
    """112x112 crops; the warped eyes land on the template (a 5-point fit leaves a residual: see below)."""
    cropper = Cropper("mtcnn", "arcface", value_range=(0.0, 255.0))  # detections at hand: no detector
    template = torch.tensor(PRESETS["arcface"].points, dtype=torch.float64)
    eye_errors = []
    for name in ("obama_01.jpg", "group_01.jpg", "alex_lacamoire_01.png"):
        crops, statuses = cropper.crop_detected(_tensor(photos[name]), [found_mtcnn[name]])
        assert crops.shape == (1, 3, 112, 112) and statuses[0].ok
        assert statuses[0].faces == len(found_mtcnn[name].faces)
    for result in found_mtcnn.values():
        for face in result.faces:
            points = torch.from_numpy(face.points).double()[None]
            warped = transform_points(points, template_matrix(points, "arcface"))[0]
            eye_errors += (warped[:2] - template[:2]).norm(dim=1).tolist()
    # Least squares over all five points does not put the eyes exactly on the template: on these photos the
    # median eye is 1.7 px off, the worst 5.1 px (smiles widen the mouth). Swapped eyes would be ~35 px off.
    assert np.median(eye_errors) < 2.0 and max(eye_errors) < 6.0
    exact = transform_points(template[None], _random_similarities(1, torch.Generator().manual_seed(2)))
    landed = transform_points(exact, template_matrix(exact, "arcface"))[0]
    assert (landed - template).norm(dim=1).max() < 1e-6


def test_cropper_detects_on_tensors_and_reports_missing_faces(mtcnn: MtcnnDetector,
                                                             photos: dict[str, np.ndarray]) -> None:
    """The detector path from [-1, 1] tensors: one face found, and a faceless image flagged, not invented."""
    face = _tensor(photos["seb_01.jpg"]) / 127.5 - 1
    blank = torch.zeros_like(face)
    crops, statuses = Cropper("mtcnn", "iresnet_bob", detector=mtcnn)(torch.cat([face, blank]))
    assert crops.shape == (2, 3, 112, 112)
    assert statuses[0].ok and statuses[0].faces == 1
    assert not statuses[1].ok and statuses[1].faces == 0 and statuses[1].error == "no face found"
    assert (crops[1] == -1).all()  # black in [-1, 1]
    framed, framed_status = Cropper("mtcnn", "synmultipie", detector=mtcnn)(face)
    assert framed.shape == (1, 3, 182, 182) and framed_status[0].ok
    assert framed.min() >= -1.01 and framed.max() <= 1.01
    eyes = transform_points(torch.from_numpy(statuses[0].detection.points).double()[None],
                            template_matrix(torch.from_numpy(statuses[0].detection.points).double()[None],
                                            "iresnet_bob"))[0, :2]
    torch.testing.assert_close(eyes, torch.tensor(PRESETS["iresnet_bob"].points, dtype=torch.float64))


def test_algorithm_choice() -> None:
    assert choose_algorithm("mtcnn", "arcface") == "similarity"
    assert choose_algorithm("dlib", "iresnet_bob") == "similarity"  # the output's eyes count (quirk 12)
    assert choose_algorithm("mtcnn", "synmultipie") == "ffhq"
    assert choose_algorithm("ffhq256", "iresnet_bob") == "fixed"
    assert choose_algorithm("resize", "arcface") == "resize"
    assert choose_algorithm("ffhq", "nocrop") == "nocrop"
    for bad in (("arcface", "mtcnn"), ("nocrop", "arcface"), ("ffhq", "resize"), ("ffhq", "nope")):
        with pytest.raises(SynthdbError):
            choose_algorithm(*bad)


def test_fixed_crop_matches_the_reference_rectangles() -> None:
    """Spec 6.4's precomputed rectangles; differentiable; zero padding where the box leaves the image."""
    table = {("ffhq", "iresnet_bob"): (86, 84, 944, 942), ("ffhq", "arcface"): (86, 83, 944, 942),
             ("ffhq256", "iresnet_bob"): (21, 21, 236, 235), ("ffhq256", "arcface"): (21, 20, 236, 235),
             ("ffhq128", "iresnet_bob"): (10, 10, 118, 117), ("ffhq256", "synmultipie"): (27, 52, 230, 255),
             ("ffhq", "ffhq256"): (0, 0, 1024, 1024)}
    assert {pair: fixed_crop_box(*pair) for pair in table} == table
    images = torch.rand(2, 3, 256, 256, requires_grad=True)
    out = fixed_crop(images, "ffhq256", "sf2_feat")
    assert out.shape == (2, 3, 160, 160)
    out.sum().backward()
    assert images.grad.abs().sum() > 0
    with pytest.raises(SynthdbError, match="ffhq256"):
        fixed_crop(torch.rand(1, 3, 100, 100), "ffhq256", "arcface")


@pytest.mark.parametrize(("preset", "size"), [("digiface64", 64), ("ffhq256", 256), ("ffhq128", 128)])
@pytest.mark.parametrize("out_preset", ["dlib150", "arcface", "sf2_feat"])
def test_fixed_crop_resizes_like_torchs_antialiased_bicubic(preset: str, size: int, out_preset: str) -> None:
    """The crop's resize matrices are torch's own resize: the same pixels (to float32 rounding on [0, 255])
    and, being linear, the same gradient."""
    images = (torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255).requires_grad_()
    x0, y0, x1, y1 = fixed_crop_box(preset, out_preset)
    region = F.pad(images, (max(-x0, 0), max(x1 - size, 0), max(-y0, 0), max(y1 - size, 0)))
    region = region[:, :, y0 + max(-y0, 0) : y1 + max(-y0, 0), x0 + max(-x0, 0) : x1 + max(-x0, 0)]
    out_size = get_preset(out_preset).size
    want = F.interpolate(region, size=out_size, mode="bicubic", align_corners=False, antialias=True)
    got = fixed_crop(images, preset, out_preset)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)
    probe = torch.rand(want.shape, generator=torch.Generator().manual_seed(1))
    (grad_want,) = torch.autograd.grad(want, images, probe)
    (grad_got,) = torch.autograd.grad(got, images, probe)
    torch.testing.assert_close(grad_got, grad_want, rtol=0, atol=1e-4)


def test_crop_matrices_cached_under_inference_mode_still_backpropagate() -> None:
    """A resize matrix first built under ``torch.inference_mode`` (an embedding job) is cached; a later
    generation job saves it for its backward pass, which an inference tensor would refuse."""
    from synthdb.faces.align import _resize_matrix

    with torch.inference_mode():
        cached = _resize_matrix(37, 91, torch.float32, torch.device("cpu"))
    x = torch.rand(2, 37, 5, requires_grad=True)
    (_resize_matrix(37, 91, torch.float32, torch.device("cpu")) @ x).sum().backward()
    assert _resize_matrix(37, 91, torch.float32, torch.device("cpu")) is cached
    torch.testing.assert_close(x.grad[0, :, 0], cached.sum(0))


def test_ffhq_quad_of_an_upright_face() -> None:
    """Eyes 100 px apart, mouth 100 px below: a 400-px axis-aligned square centred 10 px below the eyes."""
    points = torch.tensor([[(250.0, 200.0), (150.0, 200.0), (200.0, 250.0), (240.0, 300.0), (160.0, 300.0)]])
    quad = ffhq_quad(points)[0]
    expected = torch.tensor([(0.0, 10.0), (0.0, 410.0), (400.0, 410.0), (400.0, 10.0)])
    torch.testing.assert_close(quad, expected)


def test_ffhq_alignment_frames_honour_the_preset_eyes(found_mtcnn: dict[str, ImageFaces],
                                                     photos: dict[str, np.ndarray]) -> None:
    """FFHQ framing into synmultipie puts the eyes near synmultipie's eyes, not FFHQ's (quirk 12)."""
    for name in ("obama_01.jpg", "elon_01.jpg", "angelina_02.jpg"):
        points = torch.from_numpy(found_mtcnn[name].largest.points).double()[None]
        for preset in ("ffhq", "ffhq256", "synmultipie", "sf2_feat"):
            eyes = transform_points(points, ffhq_matrix(points, preset))[0, :2]
            target = torch.tensor(PRESETS[preset].points, dtype=torch.float64)
            assert (eyes - target).norm(dim=1).max() < 0.05 * PRESETS[preset].size[0], (name, preset)


def test_ffhq_shrink_and_padding(photos: dict[str, np.ndarray], found_mtcnn: dict[str, ImageFaces]) -> None:
    """A 4x larger copy of a photo gives the same crop (antialiased shrink); a face cut by the image edge
    gets NVlabs' reflect padding instead of black."""
    image = _tensor(photos["seb_01.jpg"])
    points = torch.from_numpy(found_mtcnn["seb_01.jpg"].largest.points).double()[None]
    small = ffhq_align(image, points, "ffhq128", supersample=2)
    big = torch.nn.functional.interpolate(image, scale_factor=4, mode="bicubic", align_corners=False)
    large = ffhq_align(big, (points + 0.5) * 4 - 0.5, "ffhq128", supersample=2)
    assert small.shape == large.shape == (1, 3, 128, 128)
    assert (small - large).abs().mean() < 4  # of 255
    cut, cut_points = image[:, :, 40:, 50:], points - torch.tensor([50.0, 40.0], dtype=torch.float64)
    bare = ffhq_align(cut, cut_points, "ffhq128", supersample=2, pad=False)
    padded = ffhq_align(cut, cut_points, "ffhq128", supersample=2)
    assert (bare.amax(1) == 0).float().mean() > 0.05
    assert (padded.amax(1) == 0).float().mean() == 0


# ---------------------------------------------------------------------------------------------------------
# Files


def test_crop_images_writes_pngs_and_reports_each_file(tmp_path: Path, mtcnn: MtcnnDetector,
                                                       faces_dir: Path) -> None:
    broken = tmp_path / "in" / "seb_01.jpg"  # same stem as a real input: names must not collide
    broken.parent.mkdir()
    broken.write_bytes(b"not an image")
    paths = [faces_dir / name for name in ("seb_01.jpg", "alex_lacamoire_01.png", "noface_01.jpg")] + [broken]
    report = crop_images(paths, "mtcnn", "arcface", tmp_path / "out", detector=mtcnn)
    assert [r.ok for r in report.results] == [True, True, False, False] and report.written == 2
    assert [Path(r.output).name for r in report.results[:2]] == ["seb_01.png", "alex_lacamoire_01.png"]
    for result in report.results[:2]:
        assert result.faces == 1
        assert load_image(result.output).shape == (112, 112, 3)
    assert report.results[2].error == "no face found" and report.results[2].faces == 0
    assert str(broken) in report.results[3].error


def test_crop_images_fixed_geometry_and_resize(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "gen.png")
    Image.fromarray(rng.integers(0, 255, (100, 80, 3), dtype=np.uint8)).save(tmp_path / "odd.png")
    paths = [tmp_path / "gen.png", tmp_path / "odd.png"]
    report = crop_images(paths, "ffhq256", "iresnet_bob", tmp_path / "fixed")
    assert report.results[0].ok and load_image(report.results[0].output).shape == (112, 112, 3)
    assert not report.results[1].ok and "ffhq256" in report.results[1].error
    resized = crop_images(paths, "resize", "ffhq128", tmp_path / "resized")
    assert resized.written == 2 and load_image(resized.results[1].output).shape == (128, 128, 3)


def test_cropping_photos_needs_the_detector_it_is_given() -> None:
    """The aligner never builds a detector itself (its weights are the model zoo's to find): cropping from a
    detector preset without one is a one-line error that says how to get one; reframing needs none."""
    photo = torch.zeros(1, 3, 64, 64)
    for preset in DETECTORS:
        with pytest.raises(SynthdbError, match=rf"cropping from {preset} needs its detector: .*zoo"):
            Cropper(preset, "arcface")(photo)
    crops, statuses = Cropper("ffhq256", "iresnet_bob")(torch.zeros(1, 3, 256, 256))
    assert crops.shape == (1, 3, 112, 112) and statuses[0].ok
