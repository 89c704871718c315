"""StyleGAN2: our network against NVIDIA's numbers, the restricted pickle loader, Generator and the CLI.

Fidelity data (``tests/data/stylegan2_golden_*.pt``) was made outside this repository by running NVIDIA's
official code (stylegan3 and stylegan2-ada-pytorch repositories) on small random-initialised generators;
only numbers are stored: init kwargs, state dict, inputs and outputs (see ``tests/data/README.md``).
Pickles in NVIDIA's persistence layout are written by :mod:`tests.nets.nvlabs_layout`, our own mimic of
``torch_utils.persistence``: no NVIDIA code or pickle is in the repository.
"""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from synthdb import zoo
from synthdb.admin import init_workspace
from synthdb.errors import SynthdbError
from synthdb.generate.render import generate_images
from synthdb.nets import stylegan2
from synthdb.nets.cards import get_card
from synthdb.nets.generator import TINY, Generator, _stylegan2_from_pickle, to_uint8
from synthdb.nets.pickles import PickledModule, read_network_pickle, read_pickled_module
from synthdb.store.hdf5 import H5Sample, write_sample
from tests.conftest import CliRun
from tests.nets.nvlabs_layout import official_network, persistent, write_nvlabs_pickle

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = sorted(DATA.glob("stylegan2_golden_*.pt"))
TOLERANCE = 1e-4  # max abs difference to NVIDIA's float32 outputs (observed: about 2e-6)


@pytest.fixture(scope="module")
def tiny() -> Generator:
    return Generator.load("stylegan2-tiny")


# --- fidelity to NVIDIA's code ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_pickled_official_state_reproduces_official_outputs(
    tmp_path: Path, nvlabs_modules, path: Path
) -> None:
    golden = torch.load(path, weights_only=True)
    net = official_network(golden, stylegan2.StyleGAN2Generator, _stylegan2_from_pickle)
    pkl = write_nvlabs_pickle(tmp_path / "net.pkl", nvlabs_modules, net, golden["init_kwargs"])
    g = Generator.load(pkl)
    assert not g.untrained and g.architecture.name == "stylegan2"
    for run in golden["runs"]:
        ws = g.network.mapping(
            golden["z"], golden["c"], truncation_psi=run["psi"], truncation_cutoff=run["cutoff"]
        )
        img = g.synthesis(run["ws"], noise_mode=run["noise_mode"])
        assert (ws - run["ws"]).abs().max() < TOLERANCE
        assert (img - run["img"]).abs().max() < TOLERANCE, (img - run["img"]).abs().max()


def test_state_dict_names_and_shapes_equal_official_full_size() -> None:
    official = json.loads((DATA / "stylegan2_keys.json").read_text())
    for name in ("stylegan2-ffhq-1024", "stylegan2-ffhq-256"):
        with torch.device("meta"):
            net = stylegan2.StyleGAN2Generator(**official[name]["kwargs"])
        assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == official[name]["keys"], name
        assert net.num_ws == official[name]["num_ws"]


def test_resampling_matches_its_definition() -> None:
    """upfirdn2d = zero insertion, padding, true convolution; checked against that literal recipe."""
    torch.manual_seed(0)
    x, f = torch.randn(2, 3, 5, 6), torch.rand(4, 3)
    up, pad = 2, (2, 1, 0, 3)
    zeros = torch.zeros(2, 3, 5 * up, 6 * up)
    zeros[:, :, ::up, ::up] = x
    padded = torch.nn.functional.pad(zeros, list(pad))
    expected = torch.nn.functional.conv2d(padded.reshape(6, 1, *padded.shape[2:]), f.flip([0, 1])[None, None])
    got = stylegan2.upfirdn2d(x, f, up=up, padding=pad, gain=1.0)
    torch.testing.assert_close(got, expected.reshape(2, 3, *expected.shape[2:]), atol=1e-5, rtol=1e-5)
    separable = stylegan2.upfirdn2d(x, f[:, 0], up=up, padding=pad, gain=4.0)
    outer = stylegan2.upfirdn2d(x, torch.outer(f[:, 0], f[:, 0]), up=up, padding=pad, gain=4.0)
    torch.testing.assert_close(separable, outer, atol=1e-5, rtol=1e-5)


# --- network behaviour --------------------------------------------------------------------------------------


def test_shapes(tiny: Generator) -> None:
    z = torch.randn(3, tiny.z_dim)
    assert (tiny.z_dim, tiny.w_dim, tiny.num_ws, tiny.img_resolution) == (512, 512, 10, 64)
    assert tiny.mapping(z).shape == (3, 512) and tiny.mapping(z, w_plus=True).shape == (3, 10, 512)
    assert tiny.w_avg.shape == (512,)
    with torch.no_grad():
        assert tiny.synthesis(tiny.mapping(z)).shape == (3, 3, 64, 64)
        assert tiny(z, truncation_psi=0.5).shape == (3, 3, 64, 64)
    conditional = stylegan2.StyleGAN2Generator(8, 5, 16, 8, mapping_kwargs={"num_layers": 1}, channel_max=8)
    assert conditional(torch.randn(2, 8), torch.randn(2, 5)).shape == (2, 3, 8, 8)


def test_truncation_pulls_towards_w_avg(tiny: Generator) -> None:
    z = torch.randn(4, tiny.z_dim)
    w, w_half = tiny.mapping(z), tiny.mapping(z, truncation_psi=0.5)
    torch.testing.assert_close(w_half, tiny.w_avg + 0.5 * (w - tiny.w_avg))
    assert torch.equal(tiny.mapping(z, truncation_psi=0.0), tiny.w_avg.expand(4, -1))


def test_const_noise_is_bit_identical_and_other_modes_differ(tiny: Generator) -> None:
    w = tiny.mapping(torch.randn(2, tiny.z_dim))
    with torch.no_grad():
        const = tiny.synthesis(w)
        assert torch.equal(const, tiny.synthesis(w.clone(), noise_mode="const"))
        assert not torch.equal(const, tiny.synthesis(w, noise_mode="random"))
        assert not torch.equal(const, tiny.synthesis(w, noise_mode="none"))
    with pytest.raises(SynthdbError, match="noise_mode must be one of const, random, none"):
        tiny.synthesis(w, noise_mode="fixed")


def test_gradients_reach_w_and_not_the_weights(tiny: Generator) -> None:
    w = tiny.mapping(torch.randn(2, tiny.z_dim), w_plus=True).requires_grad_(True)
    tiny.synthesis(w).square().mean().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in tiny.parameters())
    z = torch.randn(1, tiny.z_dim, requires_grad=True)
    tiny(z).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_batch_equals_singles(tiny: Generator) -> None:
    w = tiny.mapping(torch.randn(5, tiny.z_dim), truncation_psi=0.7)
    with torch.no_grad():
        batch = tiny.synthesis(w)
        singles = torch.cat([tiny.synthesis(w[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)


def test_tiny_is_reproducible_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = Generator.load("stylegan2-tiny"), Generator.load("stylegan2-tiny")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert a.untrained and "UNTRAINED" in a.describe()


def test_api_errors_are_one_line(tiny: Generator) -> None:
    with pytest.raises(SynthdbError, match=r"z has shape \(2, 7\), but stylegan2-tiny .* expects \(N, 512\)"):
        tiny.mapping(torch.randn(2, 7))
    with pytest.raises(SynthdbError, match=r"expects \(N, 10, 512\)"):
        tiny.synthesis(torch.randn(2, 3, 512))
    with pytest.raises(SynthdbError, match="takes no label c"):
        tiny.mapping(torch.randn(1, 512), torch.randn(1, 25))
    with pytest.raises(SynthdbError, match="no generator 'nope': not a file, and not one of stylegan2-tiny"):
        zoo.generator(None, "nope")
    with pytest.raises(SynthdbError, match="no generator file 'nope', and not one of stylegan2-tiny"):
        Generator.load("nope")
    with pytest.raises(SynthdbError, match="stylegan2-ffhq-256's weights .*synthdb models fetch"):
        zoo.generator(None, "stylegan2-ffhq-256")


# --- files --------------------------------------------------------------------------------------------------


def test_saved_generator_round_trip(tmp_path: Path, tiny: Generator) -> None:
    path = tiny.save(tmp_path / "tiny.pt")
    loaded = Generator.load(path)
    assert (loaded.name, loaded.untrained, loaded.kwargs) == ("stylegan2-tiny", True, tiny.kwargs)
    w = tiny.mapping(torch.randn(2, 512))
    with torch.no_grad():
        assert torch.equal(loaded.synthesis(w), tiny.synthesis(w))
    (tmp_path / "other.pt").write_bytes((tmp_path / "tiny.pt").read_bytes()[:500])
    with pytest.raises(SynthdbError, match="other.pt is not a readable synthdb generator file"):
        Generator.load(tmp_path / "other.pt")


def test_card_names_resolve_in_a_models_dir_and_a_workspace(
    tmp_path: Path, synthdb_cli: CliRun, tiny: Generator
) -> None:
    """A generator card's file (here a saved tiny network standing in for the real download) is found in the
    workspace's models directory, or through the workspace catalog after `models add`."""
    saved = tiny.save(tmp_path / "weights.pt")
    with pytest.raises(
        SynthdbError, match="holds a stylegan2 network, but stylegan2-ffhq-256 is a stylegan3"
    ):
        Generator.from_file(saved, name="stylegan2-ffhq-256", architecture="stylegan3")

    with init_workspace(tmp_path / "ws", models_dir=str(tmp_path / "ws-models")) as ctx:
        ctx.ws.models_dir.mkdir(parents=True, exist_ok=True)
        (ctx.ws.models_dir / get_card("stylegan2-ffhq-256").file).write_bytes(saved.read_bytes())
        loaded = zoo.generator(ctx, "stylegan2-ffhq-256")
        assert (loaded.name, loaded.framing) == ("stylegan2-ffhq-256", "ffhq256")  # the card's framing
        with pytest.raises(SynthdbError, match=r"not in this workspace \(.*\): fetch them "
                           r"\(`synthdb models fetch stylegan2-ffhq-1024`\)"):
            zoo.generator(ctx, "stylegan2-ffhq-1024")
        zoo.add(ctx, "stylegan2-ffhq-1024", saved)
    result = synthdb_cli(
        "generate",
        "image",
        "-w",
        str(tmp_path / "ws"),
        "--generator",
        "stylegan2-ffhq-1024",
        "--out",
        str(tmp_path / "card.png"),
    )
    assert result.exit_code == 0, result.output
    assert "from stylegan2-ffhq-1024 (stylegan2 64x64, UNTRAINED" in result.output


def test_pickle_loads_without_running_its_source(tmp_path: Path, nvlabs_modules, tiny: Generator) -> None:
    marker = tmp_path / "marker"
    source = f"open({str(marker)!r}, 'w').write('executed')\n"
    pkl = write_nvlabs_pickle(tmp_path / "g.pkl", nvlabs_modules, tiny.network, dict(tiny.kwargs), source)

    class ExecutingUnpickler(pickle.Unpickler):  # what NVIDIA's loader does with module_src
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("torch_utils.persistence", "_reconstruct_persistent_obj"):
                return lambda meta: exec(meta["module_src"], {})  # noqa: S102 - proves the fixture bites
            return super().find_class(module, name)

    with open(pkl, "rb") as f:
        ExecutingUnpickler(f).load()
    assert marker.exists()  # the fixture's source really runs under an NVIDIA-style loader ...
    marker.unlink()

    loaded = Generator.load(pkl)  # ... and never under ours
    assert not marker.exists()
    record = read_pickled_module(pkl)
    assert record.module_src == source and record.persistent and record.class_name == "Generator"
    assert read_network_pickle(pkl)["training_set_kwargs"] == {"resolution": 64}
    w = tiny.mapping(torch.randn(2, 512))
    with torch.no_grad():
        assert torch.equal(loaded.synthesis(w), tiny.synthesis(w))


class _Evil:
    def __init__(self, call: Any, *args: Any) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple:
        return self.call, self.args


@pytest.mark.parametrize("call", ["system", "eval"])
def test_pickle_with_a_foreign_global_is_refused_and_runs_nothing(
    tmp_path: Path, nvlabs_modules, call: str
) -> None:
    import builtins
    import os

    marker = tmp_path / "marker"
    payload = (
        _Evil(os.system, f"touch {marker}")
        if call == "system"
        else _Evil(builtins.eval, f"open({str(marker)!r}, 'w')")
    )
    net = stylegan2.StyleGAN2Generator(8, 0, 8, 4, mapping_kwargs={"num_layers": 1}, channel_max=4)
    net.synthesis.payload = payload  # deep inside G_ema's state
    pkl = write_nvlabs_pickle(tmp_path / "evil.pkl", nvlabs_modules, net, {"z_dim": 8})
    expected = r"(posix|nt|os)\.system" if call == "system" else r"builtins\.eval"
    with pytest.raises(
        SynthdbError, match=rf"evil.pkl refused: the pickle needs the Python global {expected}"
    ):
        Generator.load(pkl)
    assert not marker.exists()


def test_plain_torch_modules_inside_are_recorded_not_imported(tmp_path: Path, nvlabs_modules) -> None:
    decoder = nn.Module()
    decoder.net = nn.Sequential(nn.Linear(2, 3), nn.Softplus())
    pkl = tmp_path / "d.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": persistent(nvlabs_modules, decoder, "OSGDecoder")}, protocol=4))
    with pytest.raises(SynthdbError, match=r"needs the Python global torch\.nn\.modules\.linear\.Linear"):
        read_pickled_module(pkl)  # Linear is not allow-listed: NVIDIA wraps its own layers
    decoder.net = nn.Sequential(nn.Softplus())
    decoder.register_buffer("table", torch.arange(3.0))
    pkl.write_bytes(pickle.dumps({"G_ema": persistent(nvlabs_modules, decoder, "OSGDecoder")}, protocol=4))
    record = read_pickled_module(pkl)
    assert record.class_names() == {"OSGDecoder", "Sequential", "Softplus"}
    assert not record.children()["net"].persistent
    assert list(record.state_dict()) == ["table"]
    with pytest.raises(
        SynthdbError, match="holds a OSGDecoder built from .*not an architecture synthdb can build"
    ):
        Generator.load(pkl)


def test_pickle_errors_name_the_file_and_the_fix(tmp_path: Path, nvlabs_modules, tiny: Generator) -> None:
    good = write_nvlabs_pickle(tmp_path / "g.pkl", nvlabs_modules, tiny.network, dict(tiny.kwargs))
    (tmp_path / "cut.pkl").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SynthdbError, match="cut.pkl is not a readable network pickle .* download it again"):
        Generator.load(tmp_path / "cut.pkl")
    odd = write_nvlabs_pickle(tmp_path / "odd.pkl", nvlabs_modules, tiny.network, {**tiny.kwargs, "warp": 2})
    with pytest.raises(SynthdbError, match="odd.pkl: its Generator cannot be rebuilt .*warp"):
        Generator.load(odd)
    small = write_nvlabs_pickle(
        tmp_path / "small.pkl", nvlabs_modules, tiny.network, {**tiny.kwargs, "img_resolution": 32}
    )
    with pytest.raises(
        SynthdbError,
        match=r"small.pkl does not fit stylegan2: 0 missing \(-\), 19 unexpected \(synthesis.b64",
    ):
        Generator.load(small)
    tf_network = types.ModuleType("dnnlib.tflib.network")
    tf_network.Network = type("Network", (), {"__module__": "dnnlib.tflib.network"})
    sys.modules["dnnlib.tflib.network"] = tf_network
    try:
        (tmp_path / "tf.pkl").write_bytes(pickle.dumps((tf_network.Network(),) * 3, protocol=4))
    finally:
        del sys.modules["dnnlib.tflib.network"]
    with pytest.raises(SynthdbError, match="tf.pkl is a TensorFlow-era StyleGAN pickle"):
        Generator.load(tmp_path / "tf.pkl")


def test_ada_and_stylegan3_kwargs_translate() -> None:
    def translate(kwargs: dict) -> dict:
        return _stylegan2_from_pickle(PickledModule("Generator", {"_init_kwargs": kwargs}))

    ada = translate(
        {
            "z_dim": 512,
            "c_dim": 0,
            "w_dim": 512,
            "img_resolution": 256,
            "img_channels": 3,
            "mapping_kwargs": {"num_layers": 8},
            "synthesis_kwargs": {"channel_base": 16384, "num_fp16_res": 4},
        }
    )
    assert ada["conv_clamp"] is None and ada["channel_base"] == 16384 and "num_fp16_res" not in ada
    sg3 = translate(
        {
            "z_dim": 512,
            "c_dim": 0,
            "w_dim": 512,
            "img_resolution": 256,
            "img_channels": 3,
            "channel_base": 32768,
            "num_fp16_res": 4,
            "conv_clamp": 256,
            "fused_modconv_default": "inference_only",
        }
    )
    assert sg3["conv_clamp"] == 256 and "fused_modconv_default" not in sg3
    positional = PickledModule("Generator", {"_init_args": (512, 0, 512, 256, 3), "_init_kwargs": {}})
    assert _stylegan2_from_pickle(positional)["img_resolution"] == 256


# --- generate image -----------------------------------------------------------------------------------------


def test_to_uint8_rounds() -> None:
    levels = torch.tensor([-1.0, 10.6 / 127.5 - 1, 1.0, 1.5]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert to_uint8(levels)[0, 0, :, 0].tolist() == [0, 11, 255, 255]


def test_cli_same_seed_same_file(tmp_path: Path, synthdb_cli: CliRun) -> None:
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        result = synthdb_cli(
            "generate",
            "image",
            "--generator",
            "stylegan2-tiny",
            "--seed",
            "3",
            "--num",
            "3",
            "--out",
            str(out),
        )
        assert result.exit_code == 0, result.output
        assert "UNTRAINED" in result.output and "3 image(s) (3x1)" in result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert Image.open(outs[0]).size == (3 * 64, 64)
    other = synthdb_cli(
        "generate",
        "image",
        "--generator",
        "stylegan2-tiny",
        "--seed",
        "4",
        "--num",
        "3",
        "--out",
        str(tmp_path / "c.png"),
    )
    assert other.exit_code == 0 and (tmp_path / "c.png").read_bytes() != outs[0].read_bytes()
    wide = synthdb_cli(
        "generate",
        "image",
        "--generator",
        "stylegan2-tiny",
        "--num",
        "9",
        "--out",
        str(tmp_path / "grid.png"),
    )
    assert wide.exit_code == 0 and Image.open(tmp_path / "grid.png").size == (8 * 64, 2 * 64)


def test_cli_renders_a_sample_latent(tmp_path: Path, synthdb_cli: CliRun, tiny: Generator) -> None:
    w = tiny.mapping(torch.randn(1, 512), truncation_psi=0.7)
    write_sample(tmp_path / "s.h5", H5Sample(w_latent=w[0].numpy(), network_type="stylegan2-tiny"))
    result = synthdb_cli(
        "generate",
        "image",
        "--generator",
        "stylegan2-tiny",
        "--latents",
        str(tmp_path / "s.h5"),
        "--out",
        str(tmp_path / "s.png"),
    )
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        expected = to_uint8(tiny.synthesis(w))[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png")), expected)  # the image of the latent

    write_sample(tmp_path / "ref.h5", H5Sample(w_latent=w[0].numpy(), network_type="stylegan2-256"))
    wrong = synthdb_cli(
        "generate",
        "image",
        "--generator",
        "stylegan2-tiny",
        "--latents",
        str(tmp_path / "ref.h5"),
        "--out",
        str(tmp_path / "x.png"),
    )
    assert wrong.exit_code == 1
    assert (
        "holds latents of stylegan2-256, not stylegan2-tiny: pass --generator stylegan2-ffhq-256"
        in wrong.output
    )


def test_generate_images_keeps_the_global_rng(tmp_path: Path, tiny: Generator) -> None:
    state = torch.random.get_rng_state()
    result = generate_images(tiny, tmp_path / "a.png", seed=1, num=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert (result.count, result.columns, result.rows) == (2, 2, 1)
    with pytest.raises(SynthdbError, match="unknown image extension"):
        generate_images(tiny, tmp_path / "a.xyz")


def test_every_tiny_config_builds() -> None:
    for name in TINY:
        g = Generator.load(name)
        assert g.untrained and g.name == name
