"""EG3D: our network against NVIDIA's numbers, pickles in NVIDIA's layout, the camera, Generator and the CLI.

Fidelity data (``tests/data/eg3d_golden_*.pt``, ``eg3d_keys.json``) was made outside this repository by
running NVIDIA's official EG3D code on small random-initialised ``TriPlaneGenerator``s; only numbers are
stored (see ``tests/data/README.md``). Pickles in NVIDIA's persistence layout are written here, as in
``tests/nets/nvlabs_layout.py``: no NVIDIA code or pickle is in the repository.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from synthdb.errors import SynthdbError
from synthdb.generate.render import depth_path_for, generate_images
from synthdb.nets import eg3d
from synthdb.nets.generator import Generator, to_uint8
from synthdb.nets.pickles import PickledModule
from synthdb.store.hdf5 import H5Sample, write_sample
from tests.conftest import CliRun
from tests.nets.nvlabs_layout import _Persistent

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = sorted(DATA.glob("eg3d_golden_*.pt"))
TOLERANCE = 1e-4  # max abs difference to NVIDIA's float32 outputs (observed: below 4e-6)


@pytest.fixture(scope="module")
def tiny() -> Generator:
    return Generator.load("eg3d-tiny")


# --- NVIDIA persistence layout, mimicked --------------------------------------------------------------------


def _nvlabs(ns: types.SimpleNamespace, module: nn.Module, names: dict[str, str], prefix: str = "") -> Any:
    """A module of an EG3D pickle: NVIDIA's own classes as persistent records (their ``__dict__``, floats as
    numpy scalars), plain torch containers (the decoder's ``Sequential``) pickled as themselves with their
    NVIDIA children persistent. ``names`` gives official class names by module path."""
    children = OrderedDict(
        (name, _nvlabs(ns, child, names, f"{prefix}{name}.") if child is not None else None)
        for name, child in module._modules.items()
    )
    if type(module).__module__.startswith("torch."):
        clone = copy.copy(module)
        clone.__dict__["_modules"] = children
        return clone
    state: dict[str, Any] = {k: np.float64(v) if isinstance(v, float) else v for k, v in vars(module).items()}
    state["_modules"] = children
    state["_init_args"], state["_init_kwargs"] = (), ns.EasyDict()
    meta = {
        "type": "class",
        "version": 6,
        "module_src": "# training/triplane.py\n",
        "class_name": names.get(prefix.rstrip("."), type(module).__name__),
        "state": state,
    }
    return _Persistent(ns.reconstruct, meta)


def write_eg3d_pickle(
    path: Path, ns: types.SimpleNamespace, net: eg3d.EG3DGenerator, init_kwargs: dict
) -> Path:
    """A training snapshot holding ``net`` as NVIDIA's ``TriPlaneGenerator`` with ``init_kwargs``."""
    sr_class = str(net.rendering_kwargs.get("superresolution_module", "Superresolution")).rsplit(".", 1)[-1]
    root = _nvlabs(ns, net, {"": "TriPlaneGenerator", "backbone": "Generator", "superresolution": sr_class})

    def easy(value: Any) -> Any:
        return ns.EasyDict({k: easy(v) for k, v in value.items()}) if isinstance(value, dict) else value

    root.meta["state"]["_init_kwargs"] = easy(init_kwargs)
    path.write_bytes(pickle.dumps({"G": root, "G_ema": root, "D": None, "augment_pipe": None}, protocol=4))
    return path


def official_network(golden: dict) -> eg3d.EG3DGenerator:
    """Our network holding an official state (strict: every name and shape must match, in order)."""
    record = PickledModule(
        "TriPlaneGenerator",
        {
            "_init_kwargs": golden["init_kwargs"],
            "neural_rendering_resolution": golden["neural_rendering_resolution"],
            "_parameters": golden["state_dict"],  # the flat official state: what kwargs_from_pickle reads
        },
    )
    net = eg3d.EG3DGenerator(**eg3d.kwargs_from_pickle(record))
    assert list(net.state_dict()) == list(golden["state_dict"])
    net.load_state_dict(golden["state_dict"], strict=True)
    return net


# --- fidelity to NVIDIA's code ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_pickled_official_state_reproduces_official_outputs(
    tmp_path: Path,
    nvlabs_modules: types.SimpleNamespace,
    path: Path,
) -> None:
    """Mapping, and image, raw image and depth for constant, random and no noise with stochastic ray
    sampling: seeded like the official run, ours draws the same numbers in the same order."""
    golden = torch.load(path, weights_only=True)
    pkl = write_eg3d_pickle(
        tmp_path / "net.pkl", nvlabs_modules, official_network(golden), golden["init_kwargs"]
    )
    g = Generator.load(pkl)
    assert g.architecture.name == "eg3d" and not g.untrained
    assert g.network.neural_rendering_resolution == golden["neural_rendering_resolution"]
    ws = g.mapping(golden["z"], golden["c_cond"], truncation_psi=golden["psi"], w_plus=True)
    assert (ws - golden["ws"]).abs().max() < TOLERANCE
    for run in golden["runs"]:
        torch.manual_seed(run["rng_seed"])
        with torch.no_grad():
            out = g.network.render(golden["ws"], golden["c_render"], run["noise_mode"], stochastic=True)
        for ours, key in zip(out, ("image", "image_raw", "image_depth"), strict=True):
            assert ours.shape == run[key].shape
            assert (ours - run[key]).abs().max() < TOLERANCE, (run["noise_mode"], key)
    for (fov, pitch, yaw), label in zip(golden["poses"].tolist(), golden["c_render"], strict=True):
        torch.testing.assert_close(eg3d.camera_label(fov, pitch, yaw)[0], label, atol=1e-6, rtol=0)


def test_state_dict_names_and_shapes_equal_official_full_size() -> None:
    """The released FFHQ 512-128 network: its constructor arguments and state shapes translate into ours,
    which has the same tensors in the same order (built on the meta device: no memory, no time)."""
    official = json.loads((DATA / "eg3d_keys.json").read_text())["eg3d-ffhq512-128"]
    state = {k: torch.empty(shape, device="meta") for k, shape in official["keys"]}
    record = PickledModule(
        "TriPlaneGenerator",
        {
            "_init_kwargs": official["kwargs"],
            "neural_rendering_resolution": official["neural_rendering_resolution"],
            "_parameters": state,
        },
    )
    kwargs = eg3d.kwargs_from_pickle(record)
    ours = {k: v for k, v in kwargs.items() if k != "rendering_kwargs"}
    assert ours == {k: v for k, v in eg3d.FFHQ_512.items() if k != "rendering_kwargs"}
    assert eg3d.FFHQ_512["rendering_kwargs"].items() <= kwargs["rendering_kwargs"].items()
    for arguments in (kwargs, eg3d.FFHQ_512):
        with torch.device("meta"):
            net = eg3d.EG3DGenerator(**arguments)
        assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == official["keys"]
        assert (net.num_ws, net.img_resolution, net.neural_rendering_resolution) == (
            official["num_ws"],
            512,
            128,
        )


def test_camera_label_convention() -> None:
    """Frontal camera: 2.7 in front of the face on +z, looking down -z at the pivot (0, 0, 0.2), camera y
    pointing down (OpenCV); focal 1 / (tan(fov / 2) * 1.414) with fov in the official 3.14159 radians."""
    label = eg3d.camera_label(18.0)
    cam2world, intrinsics = label[0, :16].reshape(4, 4), label[0, 16:].reshape(3, 3)
    expected = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]])
    torch.testing.assert_close(cam2world, expected, atol=1e-6, rtol=0)
    focal = 1 / (math.tan(18 * 3.14159 / 360) * 1.414)
    torch.testing.assert_close(intrinsics, torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]]))
    below = eg3d.camera_label(18.0, pitch_deg=20.0)[0, :16].reshape(4, 4)
    right = eg3d.camera_label(18.0, yaw_deg=30.0)[0, :16].reshape(4, 4)
    assert below[1, 3] < 0 and right[0, 3] > 0  # pitch moves the camera down, yaw towards +x
    for pose in (below, right):
        assert abs(pose[:3, 3].norm().item() - 2.7) < 1e-5  # on the orbit
        rotation = pose[:3, :3]
        torch.testing.assert_close(rotation.T @ rotation, torch.eye(3), atol=1e-6, rtol=0)


# --- network behaviour --------------------------------------------------------------------------------------


def test_shapes_and_camera(tiny: Generator) -> None:
    c = tiny.camera(pitch_deg=5, yaw_deg=-10)
    assert c.shape == (1, 25) and (tiny.c_dim, tiny.num_ws, tiny.img_resolution) == (25, 8, 64)
    z = torch.randn(2, tiny.z_dim)
    w = tiny.mapping(z, c, truncation_psi=0.7)
    assert w.shape == (2, 512) and tiny.mapping(z, c, w_plus=True).shape == (2, 8, 512)
    assert tiny.w_avg.shape == (512,)
    with torch.no_grad():
        out = tiny.render(w, c)
        assert out.image.shape == (2, 3, 64, 64) and out.image_raw.shape == (2, 3, 32, 32)
        assert out.depth.shape == (2, 1, 32, 32)
        near, far = tiny.network.rendering_kwargs["ray_start"], tiny.network.rendering_kwargs["ray_end"]
        assert ((out.depth >= near) & (out.depth <= far)).all()
        assert torch.equal(tiny.synthesis(w, c), out.image)


def test_const_is_bit_identical_batch_equals_singles_random_differs(tiny: Generator) -> None:
    c = torch.cat([tiny.camera(), tiny.camera(yaw_deg=25), tiny.camera(pitch_deg=-10)])
    w = tiny.mapping(torch.randn(3, tiny.z_dim), c[:1])
    with torch.no_grad():
        batch = tiny.render(w, c)
        again = tiny.render(w.clone(), c.clone())
        assert all(torch.equal(a, b) for a, b in zip(batch, again, strict=True))
        singles = [tiny.render(w[i : i + 1], c[i : i + 1]) for i in range(3)]
        for field, value in zip(batch, zip(*singles, strict=True), strict=True):
            torch.testing.assert_close(field, torch.cat(value), atol=1e-5, rtol=0)
        assert not torch.equal(batch.image, tiny.synthesis(w, c, noise_mode="random"))
        assert not torch.equal(batch.image[0], batch.image[1])  # another camera, another image


def test_gradients_reach_w_and_not_the_weights(tiny: Generator) -> None:
    w = tiny.mapping(torch.randn(1, tiny.z_dim), tiny.camera(), w_plus=True).requires_grad_(True)
    out = tiny.render(w, tiny.camera(yaw_deg=10))
    (out.image.square().mean() + out.depth.mean()).backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in tiny.parameters())


def test_api_errors_are_one_line(tiny: Generator) -> None:
    w = torch.randn(2, 512)
    with pytest.raises(SynthdbError, match=r"is conditional: pass c with shape \(N, 25\) \(a camera label"):
        tiny.synthesis(w)
    with pytest.raises(SynthdbError, match=r"c has shape \(2, 16\), but eg3d-tiny .* expects \(N, 25\)"):
        tiny.render(w, torch.randn(2, 16))
    with pytest.raises(SynthdbError, match="c has 3 rows for a batch of 2: pass 1 or 2"):
        tiny.mapping(torch.randn(2, 512), tiny.camera().expand(3, -1))
    stylegan2 = Generator.load("stylegan2-tiny")
    with pytest.raises(SynthdbError, match="stylegan2-tiny .* renders no depth: only EG3D"):
        stylegan2.render(w, None)
    with pytest.raises(SynthdbError, match="has no camera: only EG3D"):
        stylegan2.camera()


def test_saved_round_trip_and_pickle_of_tiny(
    tmp_path: Path,
    nvlabs_modules: types.SimpleNamespace,
    tiny: Generator,
) -> None:
    """Generator.save keeps the EG3D arguments (the superresolution layout included); an NVIDIA-layout
    pickle of the tiny network loads back with the rendering options it was pickled with."""
    c = tiny.camera(yaw_deg=15)
    w = tiny.mapping(torch.randn(1, 512), tiny.camera())
    with torch.no_grad():
        expected = tiny.render(w, c)
        loaded = Generator.load(tiny.save(tmp_path / "tiny.pt"))
        assert (loaded.name, loaded.untrained) == ("eg3d-tiny", True)
        assert all(torch.equal(a, b) for a, b in zip(loaded.render(w, c), expected, strict=True))
        options = {**tiny.network.rendering_kwargs, "superresolution_module": "x.SuperresolutionHybrid2X"}
        network = copy.deepcopy(tiny.network)
        network.rendering_kwargs = options
        init_kwargs = {
            k: v for k, v in tiny.kwargs.items() if k not in ("superresolution", "backbone_resolution")
        }
        pkl = write_eg3d_pickle(tmp_path / "tiny.pkl", nvlabs_modules, network, init_kwargs)
        from_pickle = Generator.load(pkl)
        assert from_pickle.kwargs["superresolution"]["channels"] == [32, 16]
        assert all(torch.equal(a, b) for a, b in zip(from_pickle.render(w, c), expected, strict=True))


# --- generate image -----------------------------------------------------------------------------------------


def test_cli_writes_image_and_depth_twice_identical(
    tmp_path: Path, tiny: Generator, synthdb_cli: CliRun
) -> None:
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        result = synthdb_cli(
            "generate", "image", "--generator", "eg3d-tiny", "--yaw", "20", "--save-depth", "--out", str(out)
        )
        assert result.exit_code == 0, result.output
        assert "UNTRAINED" in result.output and "camera fov 18 pitch 0 yaw 20" in result.output
        assert f"{depth_path_for(out)}: depth maps" in result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert depth_path_for(outs[0]).read_bytes() == depth_path_for(outs[1]).read_bytes()
    depth = np.load(depth_path_for(outs[0]))
    assert depth.shape == (1, 32, 32) and depth.dtype == np.float32
    # the files hold the rendering of seed 0's w, conditioned on the frontal camera, seen from yaw 20
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = tiny.render(tiny.mapping(z, tiny.camera(), truncation_psi=0.7), tiny.camera(yaw_deg=20))
    assert np.array_equal(np.asarray(Image.open(outs[0])), to_uint8(out.image)[0])
    assert np.array_equal(depth, out.depth[:, 0].numpy())
    no_depth = synthdb_cli("generate", "image", "--generator", "eg3d-tiny", "--out", str(tmp_path / "c.png"))
    assert no_depth.exit_code == 0 and not depth_path_for(tmp_path / "c.png").exists()
    refused = synthdb_cli(
        "generate", "image", "--generator", "stylegan2-tiny", "--save-depth", "--out", str(tmp_path / "d.png")
    )
    assert (
        refused.exit_code == 1
        and "--save-depth need a generator that renders from a camera" in refused.output
    )


def test_sample_renders_from_its_camera_unless_one_is_given(tmp_path: Path, tiny: Generator) -> None:
    c = tiny.camera(pitch_deg=-8, yaw_deg=12)
    w = tiny.mapping(torch.randn(1, 512), tiny.camera(), truncation_psi=0.7)
    sample = tmp_path / "s.h5"
    write_sample(sample, H5Sample(w_latent=w[0].numpy(), c_label=c[0].numpy(), network_type="eg3d-tiny"))
    own = generate_images(tiny, tmp_path / "own.png", latents=sample, save_depth=True)
    posed = generate_images(tiny, tmp_path / "posed.png", latents=sample, yaw=-30)
    with torch.no_grad():
        expected = tiny.render(w, c)
    assert np.array_equal(np.asarray(Image.open(own.path)), to_uint8(expected.image)[0])
    assert np.array_equal(np.load(own.depth_path), expected.depth[:, 0].numpy())
    assert "camera" not in own.source and "yaw -30" in posed.source
    assert Image.open(posed.path).tobytes() != Image.open(own.path).tobytes()


@pytest.mark.skipif(os.environ.get("SYNTHDB_STRESS") != "1", reason="full-size EG3D on CPU: SYNTHDB_STRESS=1")
def test_full_size_ffhq_512_renders() -> None:
    """The released architecture (random weights): 512 px from 128x128 rays with 48 + 48 samples."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g = Generator(eg3d.EG3DGenerator(**eg3d.FFHQ_512), "eg3d", eg3d.FFHQ_512)
    with torch.no_grad():
        out = g.render(g.mapping(torch.randn(1, 512), g.camera()), g.camera(yaw_deg=20))
    assert out.image.shape == (1, 3, 512, 512) and out.depth.shape == (1, 1, 128, 128)
    assert torch.isfinite(out.image).all() and torch.isfinite(out.depth).all()
