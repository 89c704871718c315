"""StyleGAN3 (configs T and R): our network against NVIDIA's numbers, NVIDIA-layout pickles, Generator.

Fidelity data (``tests/data/stylegan3_golden_*.pt``, ``stylegan3_keys.json``) was made outside this
repository by running NVIDIA's official ``training/networks_stylegan3.py`` on small random-initialised
generators; only numbers are stored (see ``tests/data/README.md``). Pickles in NVIDIA's persistence layout
are written by the StyleGAN2 tests' mimic of ``torch_utils.persistence``.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from synthdb import zoo
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.generate.render import generate_images
from synthdb.nets import stylegan3
from synthdb.nets.cards import get_card
from synthdb.nets.generator import TINY, Generator
from synthdb.nets.pickles import PickledModule, read_pickled_module
from tests.nets.nvlabs_layout import official_network, write_nvlabs_pickle

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = sorted(DATA.glob("stylegan3_golden_*.pt"))
TOLERANCE = 1e-4  # max abs difference to NVIDIA's float32 outputs (observed: below 1e-6)
SOURCE = "# networks_stylegan3.py\n"


@pytest.fixture(scope="module", params=["stylegan3-tiny", "stylegan3-r-tiny"])
def tiny(request: pytest.FixtureRequest) -> Generator:
    return Generator.load(request.param)


def nvidia_like(net: stylegan3.StyleGAN3Generator) -> stylegan3.StyleGAN3Generator:
    """A copy carrying the numpy size arrays NVIDIA's StyleGAN3 modules hold, so that a pickle of it has
    the same kinds of objects as NVIDIA's (the loader must read and ignore them)."""
    net = copy.deepcopy(net)
    net.synthesis.input.size = np.broadcast_to(np.asarray(net.synthesis.input.size), [2])
    for name in net.synthesis.layer_names:
        layer = getattr(net.synthesis, name)
        layer.in_size = np.broadcast_to(np.asarray(layer.in_size), [2])
        layer.out_size = np.broadcast_to(np.asarray(layer.out_size), [2])
    return net


# --- fidelity to NVIDIA's code ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_pickled_official_state_reproduces_official_outputs(
    tmp_path: Path, nvlabs_modules, path: Path
) -> None:
    golden = torch.load(path, weights_only=True)
    net = nvidia_like(official_network(golden, stylegan3.StyleGAN3Generator, stylegan3.kwargs_from_pickle))
    pkl = write_nvlabs_pickle(tmp_path / "net.pkl", nvlabs_modules, net, golden["init_kwargs"], SOURCE)
    g = Generator.load(pkl)
    assert not g.untrained and g.architecture.name.startswith("stylegan3-")
    assert isinstance(g.network, stylegan3.StyleGAN3Generator)
    for run in golden["runs"]:
        ws = g.network.mapping(
            golden["z"], golden["c"], truncation_psi=run["psi"], truncation_cutoff=run["cutoff"]
        )
        with torch.no_grad():
            img = g.synthesis(run["ws"], noise_mode=run["noise_mode"])
        assert (ws - run["ws"]).abs().max() < TOLERANCE
        assert (img - run["img"]).abs().max() < TOLERANCE, (img - run["img"]).abs().max()
    assert len({run["img"].sum().item() for run in golden["runs"]}) == len(golden["runs"])  # runs differ


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_designed_filters_equal_official_buffers(path: Path) -> None:
    """Our Kaiser / jinc filter design (no scipy) gives NVIDIA's scipy-designed buffers, and the same
    layers have none (identity filters)."""
    golden = torch.load(path, weights_only=True)
    record = PickledModule("Generator", {"_init_kwargs": golden["init_kwargs"]})
    ours = stylegan3.StyleGAN3Generator(**stylegan3.kwargs_from_pickle(record)).state_dict()
    filters = {k: v for k, v in golden["state_dict"].items() if k.endswith("_filter")}
    assert filters.keys() == {k for k in ours if k.endswith("_filter")}
    assert any(v.ndim == 2 for v in filters.values()) == ("_r" in path.stem)  # R: radial down filters
    for key, official in filters.items():
        torch.testing.assert_close(ours[key], official, atol=1e-7, rtol=0, msg=key)


def test_state_dict_names_and_shapes_equal_official_full_size() -> None:
    official = json.loads((DATA / "stylegan3_keys.json").read_text())
    for name in ("stylegan3-t-ffhq-1024", "stylegan3-r-ffhq-1024"):
        with torch.device("meta"):
            net = stylegan3.StyleGAN3Generator(**official[name]["kwargs"])
        assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == official[name]["keys"], name
        assert net.num_ws == official[name]["num_ws"] == 16


def test_resampling_matches_its_definition() -> None:
    """upsample_filter = zero insertion, padding, true convolution on both axes; filter_downsample =
    true convolution, then every down-th sample: both checked against that literal recipe."""
    torch.manual_seed(0)
    x, f, f2 = torch.randn(2, 3, 7, 6), torch.rand(8), torch.rand(5, 5)
    up, pad = 2, (5, 3, -1, 4)
    zeros = torch.zeros(2, 3, 7 * up, 6 * up)
    zeros[:, :, ::up, ::up] = x
    padded = F.pad(zeros, list(pad)).reshape(6, 1, *F.pad(zeros, list(pad)).shape[2:])
    expected = F.conv2d(padded, torch.outer(f, f).flip([0, 1])[None, None] * 3.0)
    got = stylegan3.upsample_filter(x, f, up, pad, gain=3.0)
    torch.testing.assert_close(got, expected.reshape(2, 3, *expected.shape[2:]), atol=1e-5, rtol=1e-5)

    y = torch.randn(2, 3, 16, 15)
    for kernel, taps in ((torch.outer(f, f), f), (f2, f2)):
        full = F.conv2d(y.reshape(6, 1, 16, 15), kernel.flip([0, 1])[None, None])
        got = stylegan3.filter_downsample(y, taps, 2)
        torch.testing.assert_close(got, full[:, :, ::2, ::2].reshape(got.shape), atol=1e-5, rtol=1e-5)


def test_filtered_lrelu_clamps_like_the_activation_then_clamp() -> None:
    """The clamp runs before the activation (at -clamp/slope and clamp): same as clamping its output."""
    torch.manual_seed(1)
    x, b, fu = torch.randn(1, 2, 6, 6) * 20, torch.randn(2), stylegan3.design_lowpass_filter(12, 2.0, 3.0, 16)
    got = stylegan3.filtered_lrelu(x, fu, None, b, up=2, padding=(5, 6, 5, 6), gain=math.sqrt(2), clamp=1.5)
    up = stylegan3.upsample_filter(x + b.reshape(1, 2, 1, 1), fu, 2, (5, 6, 5, 6), gain=4)
    expected = (F.leaky_relu(up, 0.2) * math.sqrt(2)).clamp(-1.5, 1.5)
    assert (expected.abs() == 1.5).any() and (expected == -1.5).any()  # clamping active on both sides
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# --- network behaviour --------------------------------------------------------------------------------------


def test_shapes(tiny: Generator) -> None:
    z = torch.randn(3, tiny.z_dim)
    assert (tiny.z_dim, tiny.w_dim, tiny.num_ws, tiny.img_resolution) == (512, 512, 8, 64)
    assert tiny.mapping(z).shape == (3, 512) and tiny.mapping(z, w_plus=True).shape == (3, 8, 512)
    assert tiny.w_avg.shape == (512,) and tiny.w_avg.abs().sum() > 0
    with torch.no_grad():
        img = tiny(z, truncation_psi=0.5)
    assert img.shape == (3, 3, 64, 64) and 0.2 < img.std() < 1.0  # not saturated, not blank
    conditional = stylegan3.StyleGAN3Generator(8, 5, 16, 16, channel_max=8, num_layers=3, margin_size=1)
    assert conditional(torch.randn(2, 8), torch.randn(2, 5)).shape == (2, 3, 16, 16)


def test_every_noise_mode_gives_the_same_bits(tiny: Generator) -> None:
    """StyleGAN3 has no noise inputs: the API takes noise_mode, and the image is a function of w."""
    w = tiny.mapping(torch.randn(2, tiny.z_dim))
    with torch.no_grad():
        const = tiny.synthesis(w)
        assert torch.equal(const, tiny.synthesis(w.clone(), noise_mode="const"))
        assert torch.equal(const, tiny.synthesis(w, noise_mode="random"))
        assert torch.equal(const, tiny.synthesis(w, noise_mode="none"))
        assert not torch.equal(const[0], const[1])
    with pytest.raises(SynthdbError, match="noise_mode must be one of const, random, none"):
        tiny.synthesis(w, noise_mode="fixed")


def test_gradients_reach_w_and_not_the_weights(tiny: Generator) -> None:
    w = tiny.mapping(torch.randn(2, tiny.z_dim), w_plus=True).requires_grad_(True)
    tiny.synthesis(w).square().mean().backward()
    assert w.grad is not None and (w.grad[:, 0].abs().sum() > 0) and (w.grad[:, -1].abs().sum() > 0)
    assert all(not p.requires_grad and p.grad is None for p in tiny.parameters())


def test_batch_equals_singles(tiny: Generator) -> None:
    w = tiny.mapping(torch.randn(4, tiny.z_dim), truncation_psi=0.7)
    with torch.no_grad():
        batch = tiny.synthesis(w)
        singles = torch.cat([tiny.synthesis(w[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)


def test_the_first_w_row_moves_the_image(tiny: Generator) -> None:
    """The input layer's affine turns w into a rotation and translation of the Fourier features, so the
    first w row alone changes the picture (tiny_init gives that affine weights; NVIDIA starts it at 0)."""
    ws = tiny.mapping(torch.randn(2, tiny.z_dim), w_plus=True)
    mixed = ws[:1].clone()
    mixed[:, 0] = ws[1, 0]
    with torch.no_grad():
        assert (tiny.synthesis(mixed) - tiny.synthesis(ws[:1])).abs().max() > 0.1


def test_tiny_is_reproducible_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = Generator.load("stylegan3-tiny"), Generator.load("stylegan3-tiny")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert a.untrained and "UNTRAINED" in a.describe() and a.architecture.name == "stylegan3-t"
    assert TINY["stylegan3-r-tiny"].architecture == "stylegan3-r"


# --- files --------------------------------------------------------------------------------------------------


def test_saved_generator_round_trip(tmp_path: Path, tiny: Generator) -> None:
    loaded = Generator.load(tiny.save(tmp_path / "tiny.pt"))
    assert (loaded.name, loaded.architecture.name, loaded.kwargs) == (
        tiny.name,
        tiny.architecture.name,
        tiny.kwargs,
    )
    w = tiny.mapping(torch.randn(2, 512))
    with torch.no_grad():
        assert torch.equal(loaded.synthesis(w), tiny.synthesis(w))


def test_pickle_loads_identically_without_running_its_source(
    tmp_path: Path, nvlabs_modules, tiny: Generator
) -> None:
    marker = tmp_path / "marker"
    source = f"open({str(marker)!r}, 'w').write('executed')\n"
    kwargs = {**tiny.kwargs, "magnitude_ema_beta": 0.5 ** (32 / 20e3), "num_fp16_res": 4}
    pkl = write_nvlabs_pickle(tmp_path / "g.pkl", nvlabs_modules, nvidia_like(tiny.network), kwargs, source)

    class ExecutingUnpickler(pickle.Unpickler):  # what NVIDIA's loader does with module_src
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("torch_utils.persistence", "_reconstruct_persistent_obj"):
                return lambda meta: exec(meta["module_src"], {})  # noqa: S102 - proves the fixture bites
            return super().find_class(module, name)

    with open(pkl, "rb") as f:
        ExecutingUnpickler(f).load()
    assert marker.exists()  # the source really runs under an NVIDIA-style loader ...
    marker.unlink()

    loaded = Generator.load(pkl)  # ... and never under ours
    assert not marker.exists()
    assert "SynthesisInput" in read_pickled_module(pkl).class_names()
    w = tiny.mapping(torch.randn(2, 512))
    with torch.no_grad():
        assert torch.equal(loaded.synthesis(w), tiny.synthesis(w))


def test_config_r_pickle_is_detected_as_stylegan3_r(tmp_path: Path, nvlabs_modules) -> None:
    kwargs = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 16, "channel_max": 4, "num_layers": 3}
    kwargs.update(margin_size=1, conv_kernel=1, use_radial_filters=True)
    net = stylegan3.StyleGAN3Generator(**kwargs)
    pkl = write_nvlabs_pickle(tmp_path / "r.pkl", nvlabs_modules, net, kwargs, SOURCE)
    assert stylegan3.is_config_r(read_pickled_module(pkl))
    assert Generator.load(pkl).architecture.name == "stylegan3-r"


def test_pickled_kwargs_translate_and_odd_ones_are_refused(tmp_path: Path, nvlabs_modules) -> None:
    def translate(kwargs: dict, args: tuple = ()) -> dict:
        return stylegan3.kwargs_from_pickle(
            PickledModule("Generator", {"_init_args": args, "_init_kwargs": kwargs})
        )

    official_r = {
        "z_dim": 512,
        "c_dim": 0,
        "w_dim": 512,
        "img_resolution": 256,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2, "w_avg_beta": 0.995},
        "channel_base": 65536,
        "channel_max": 1024,
        "magnitude_ema_beta": 0.999,
        "conv_kernel": 1,
        "use_radial_filters": True,
    }
    r = translate(official_r)
    assert "magnitude_ema_beta" not in r and r["mapping_kwargs"] == {"num_layers": 2}
    assert r["conv_kernel"] == 1 and r["use_radial_filters"]
    assert translate({}, (512, 0, 512, 256, 3))["img_resolution"] == 256
    with pytest.raises(ValueError, match="StyleGAN3 does not know: warp"):
        translate({**official_r, "warp": 2})

    net = stylegan3.StyleGAN3Generator(8, 0, 8, 16, channel_max=4, num_layers=3, margin_size=1)
    kwargs = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 16, "channel_max": 4, "num_layers": 3}
    odd = write_nvlabs_pickle(
        tmp_path / "odd.pkl", nvlabs_modules, net, {**kwargs, "margin_size": 1, "warp": 2}
    )
    with pytest.raises(SynthdbError, match="odd.pkl: its Generator cannot be rebuilt .*warp"):
        Generator.load(odd)
    other = write_nvlabs_pickle(tmp_path / "other.pkl", nvlabs_modules, net, kwargs)  # margin 10, not 1
    with pytest.raises(SynthdbError, match=r"other.pkl does not fit stylegan3-t: .* misshapen tensors"):
        Generator.load(other)


def test_generate_images_renders_a_grid_reproducibly(tmp_path: Path, tiny: Generator) -> None:
    """The image generation API drives StyleGAN3 like StyleGAN2: same seed, same file."""
    for out in ("a.png", "b.png"):
        result = generate_images(tiny, tmp_path / out, seed=1, num=2)
        assert (result.count, result.columns, result.rows) == (2, 2, 1)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert Image.open(tmp_path / "a.png").size == (2 * 64, 64)


def test_input_pose_rotates_and_translates_the_features() -> None:
    """The affine's output (cos, sin, tx, ty) is the image's pose: a quarter turn rotates the feature maps
    by 90 degrees on the symmetric pixel grid, and tx of one sampling period shifts them by one pixel."""
    torch.manual_seed(2)
    layer = stylegan3.SynthesisInput(w_dim=4, channels=6, size=8, sampling_rate=8, bandwidth=2.0)

    def features(pose: list[float]) -> torch.Tensor:
        with torch.no_grad():
            layer.affine.bias.copy_(torch.tensor(pose))
            return layer(torch.zeros(1, 4))

    upright = features([1, 0, 0, 0])
    torch.testing.assert_close(
        features([0, 3, 0, 0]), torch.rot90(upright, 1, dims=(2, 3)), atol=1e-5, rtol=0
    )
    shifted = features([2, 0, 2 / 8, 0])  # scale of (cos, sin) is normalised away, translation is not
    torch.testing.assert_close(shifted[..., 1:], upright[..., :-1], atol=1e-5, rtol=0)


def test_model_cards_name_the_stylegan3_architectures(sqlite_ctx: Context, tiny: Generator) -> None:
    """The stylegan3 cards' architectures (stylegan3-t / stylegan3-r) are the names files are built as: a
    generator file of the card's config loads under the card's name, one of the other config is refused."""
    card_name = (
        "stylegan3-t-ffhqu-256" if tiny.architecture.name == "stylegan3-t" else "stylegan3-r-ffhqu-256"
    )
    other_name = "stylegan3-r-ffhqu-256" if card_name.startswith("stylegan3-t") else "stylegan3-t-ffhqu-256"
    card, other = get_card(card_name), get_card(other_name)
    assert card.architecture == tiny.architecture.name
    models = sqlite_ctx.ws.models_dir
    models.mkdir(parents=True, exist_ok=True)
    (models / card.file).write_bytes(tiny.save(models / "g.pt").read_bytes())
    (models / other.file).write_bytes((models / card.file).read_bytes())
    assert zoo.generator(sqlite_ctx, card_name).name == card_name
    with pytest.raises(SynthdbError, match=f"holds a {card.architecture} network, but {other_name} is a"):
        zoo.generator(sqlite_ctx, other_name)
