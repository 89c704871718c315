"""rosinality/stylegan2-pytorch checkpoints translated into our StyleGAN2 and checked against its numbers.

Fidelity data (``tests/data/rosinality_golden_*.pt``) was made outside this repository by running rosinality's
official ``Generator`` (``model.py``) on small random-initialised generators; only numbers are stored: the
checkpoint (``g_ema`` state and ``latent_avg``), inputs and outputs (see ``tests/data/README.md``).
``rosinality_golden_layouts.pt`` holds the names and shapes of full-size official states.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from synthdb import zoo
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.nets import rosinality
from synthdb.nets.cards import get_card
from synthdb.nets.generator import ARCHITECTURES, Generator, _build
from synthdb.nets.stylegan2 import make_filter

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = [DATA / "rosinality_golden_32.pt", DATA / "rosinality_golden_16.pt"]
TOLERANCE = 1e-4  # max abs difference to rosinality's float32 outputs (observed: below 1e-5)


def load_golden(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def golden32() -> dict[str, Any]:
    return load_golden(GOLDEN[0])


def write(tmp_path: Path, payload: dict[str, Any], name: str = "ckpt.pt") -> Path:
    path = tmp_path / name
    torch.save(payload, path)
    return path


def noise_layers(size: int) -> list[str]:
    """Our layer names in rosinality's noise order: b4.conv1, then conv0 and conv1 of each larger block."""
    return ["b4.conv1"] + [
        f"b{res}.conv{i}" for res in (2**k for k in range(3, size.bit_length())) for i in (0, 1)
    ]


# --- fidelity to rosinality's code --------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_checkpoint_reproduces_rosinality(tmp_path: Path, path: Path) -> None:
    """mapping(z) is rosinality's style(z); truncated and untruncated w+ and images match, with the stored
    noise (``randomize_noise=False``, our const mode) and with noise images given per layer."""
    golden = load_golden(path)
    generator = Generator.load(write(tmp_path, golden["checkpoint"]))
    config = golden["config"]
    assert (generator.img_resolution, generator.w_dim, generator.num_ws) == (
        config["size"],
        config["style_dim"],
        2 * config["size"].bit_length() - 4,  # rosinality's n_latent = 2 log2(size) - 2
    )
    assert generator.network.mapping.num_layers == config["n_mlp"]
    z = golden["z"]
    with torch.no_grad():
        assert (generator.mapping(z) - golden["w"]).abs().max() < TOLERANCE
        for run in golden["runs"]:
            ws = generator.mapping(z, truncation_psi=run["psi"], w_plus=True)
            assert (ws - run["ws"]).abs().max() < TOLERANCE, run["psi"]
            if run["noise"] == "stored":
                img = generator.synthesis(ws)
            else:
                noise = dict(zip(noise_layers(config["size"]), golden["noise"], strict=True))
                img = generator.network.synthesis(ws, noise=noise)
            assert img.abs().mean() > 0.5  # not a degenerate image
            assert (img - run["img"]).abs().max() < TOLERANCE, (run["psi"], run["noise"])


def test_stored_noise_becomes_const_noise_and_latent_avg_w_avg(tmp_path: Path, golden32: dict) -> None:
    checkpoint = golden32["checkpoint"]
    generator = Generator.load(write(tmp_path, checkpoint))
    for idx, layer in enumerate(noise_layers(32)):
        ours = generator.network.synthesis.get_submodule(layer).noise_const
        assert torch.equal(ours, checkpoint["g_ema"][f"noises.noise_{idx}"][0, 0]), layer
    assert torch.equal(generator.w_avg, checkpoint["latent_avg"])
    assert "rosinality checkpoint, w_avg from its latent_avg" in generator.describe()


def test_train_checkpoint_without_latent_avg(tmp_path: Path, golden32: dict) -> None:
    """train.py's layout (g, d, optimiser states, argparse args, no latent_avg) loads with weights_only;
    w_avg is then the mean w of seeded z: the same on every load, and close to the mean of other z."""
    g_ema = golden32["checkpoint"]["g_ema"]
    payload = {
        "g": {k: v.clone() for k, v in g_ema.items()},
        "d": {"convs.0.0.weight": torch.randn(8, 3, 1, 1)},
        "g_ema": g_ema,
        "g_optim": {
            "state": {0: {"step": torch.tensor(3.0)}},
            "param_groups": [{"lr": 0.002, "params": [0]}],
        },
        "d_optim": {"state": {}, "param_groups": []},
        "args": argparse.Namespace(size=32, n_mlp=3, latent=32, channel_multiplier=1),
        "ada_aug_p": 0.0,
        "latent_avg": None,  # as good as absent
    }
    path = write(tmp_path, payload)
    first, second = Generator.load(path), Generator.load(path)
    assert torch.equal(first.w_avg, second.w_avg)
    assert "w_avg estimated from 4096 seeded z (it has no latent_avg)" in first.describe()
    with torch.no_grad():
        other = first.mapping(torch.randn(4096, 32, generator=torch.Generator().manual_seed(1))).mean(dim=0)
    spread = (first.w_avg - golden32["checkpoint"]["latent_avg"]).abs().max()
    assert (first.w_avg - other).abs().max() < 0.1 * spread  # a sampling error, far from another centre


def test_saved_copy_reproduces_the_translation(tmp_path: Path, golden32: dict) -> None:
    generator = Generator.load(write(tmp_path, golden32["checkpoint"]))
    again = Generator.load(generator.save(tmp_path / "saved.pt"))
    assert again.kwargs == generator.kwargs
    w = generator.mapping(golden32["z"], truncation_psi=0.7)
    with torch.no_grad():
        assert torch.equal(again.synthesis(w), generator.synthesis(w))


# --- full-size layouts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "nvidia", "base"),
    [
        ("1024_cm2", "stylegan2-ffhq-1024", 32768),
        ("256_cm2", "stylegan2-ffhq-256", 32768),
        ("256_cm1", None, 16384),
    ],
)
def test_full_size_layouts_translate_to_nvidia_names_and_shapes(
    layout: str, nvidia: str | None, base: int
) -> None:
    """The official 1024 and 256 states (config F: channel_multiplier 2, 8 mapping layers; and multiplier 1)
    become exactly NVIDIA's G_ema layout. Tensors are on the meta device: shapes only, no memory."""
    keys = torch.load(DATA / "rosinality_golden_layouts.pt", weights_only=True)[layout]
    blur = make_filter() * 4
    g_ema = {k: blur if k.endswith("kernel") else torch.empty(shape, device="meta") for k, shape in keys}
    path = Path(f"{layout}.pt")
    kwargs, state, has_w_avg = rosinality.translate({"g_ema": g_ema, "latent_avg": torch.zeros(512)}, path)
    size = int(layout.split("_")[0])
    assert has_w_avg
    assert (kwargs["img_resolution"], kwargs["channel_base"], kwargs["channel_max"]) == (size, base, 512)
    assert kwargs["mapping_kwargs"] == {"num_layers": 8} and kwargs["conv_clamp"] is None
    network = _build(ARCHITECTURES["stylegan2"], kwargs, state, path)
    assert network.num_ws == 2 * size.bit_length() - 4
    if nvidia is not None:
        official = json.loads((DATA / "stylegan2_keys.json").read_text())[nvidia]
        assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(s) for k, s in official["keys"]}


# --- model cards --------------------------------------------------------------------------------------------


def test_cards_name_their_own_files_and_crops(sqlite_ctx: Context, golden32: dict) -> None:
    """The 256 card has its own file and the 256 crop (the reference pointed it at the 1024 file and
    cropped it with the 1024 preset); a card resolves to a rosinality file in a models directory."""
    big, small = get_card("stylegan2-rosinality-1024"), get_card("stylegan2-rosinality-256")
    assert big.file != small.file
    assert (big.preset, big.image_size, small.preset, small.image_size) == ("ffhq", 1024, "ffhq256", 256)
    assert big.architecture == small.architecture == "stylegan2"
    sqlite_ctx.ws.models_dir.mkdir(parents=True, exist_ok=True)
    write(sqlite_ctx.ws.models_dir, golden32["checkpoint"], small.file)
    generator = zoo.generator(sqlite_ctx, "stylegan2-rosinality-256")
    assert generator.name == "stylegan2-rosinality-256"
    assert generator.describe().startswith("stylegan2-rosinality-256 (stylegan2 32x32, rosinality checkpoint")


# --- bad files ----------------------------------------------------------------------------------------------


def _damaged(checkpoint: dict[str, Any], how: str) -> Any:
    g = dict(checkpoint["g_ema"])
    payload = {"g_ema": g, "latent_avg": checkpoint["latent_avg"]}
    if how == "missing":
        del g["convs.3.noise.weight"]
    elif how == "misshapen":
        g["to_rgb1.bias"] = torch.zeros(1, 4, 1, 1)
    elif how == "latent_avg":
        payload["latent_avg"] = torch.zeros(7)
    elif how == "blur":
        g["convs.2.conv.blur.kernel"] = torch.ones(4, 4) / 4
    elif how == "extra":
        del g["to_rgbs.2.conv.weight"]  # the 32 px ToRGB gone: its convs are left over
    elif how == "not_rosinality":
        payload["g_ema"] = {"synthesis.b4.const": torch.zeros(8, 4, 4)}
    elif how == "not_tensors":
        payload["g_ema"] = {"input.input": [1, 2]}
    elif how == "flat":
        g["input.input"] = torch.zeros(16)
    elif how == "widths":
        g["input.input"] = torch.zeros(1, 8, 4, 4)  # 4 px narrower than 8 px
    return payload


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing", r"g_ema has no convs\.3\.noise\.weight; the file is damaged or truncated"),
        ("misshapen", r"g_ema's to_rgb1\.bias has shape \(1, 4, 1, 1\), expected \(1, 3, 1, 1\)"),
        ("latent_avg", r"its latent_avg is \(7,\), not a vector of 32 .*delete the latent_avg entry"),
        ("blur", r"convs\.2\.conv\.blur\.kernel is not the \[1, 3, 3, 1\] blur"),
        ("extra", r"g_ema holds 17 tensors a 16 px generator does not have \(convs\.4\.activate\.bias"),
        (
            "not_rosinality",
            r"its g_ema lacks input\.input, style\.1\.weight, to_rgb1\.conv\.weight, so it is not",
        ),
        ("not_tensors", r"its g_ema is not a state dict of tensors"),
        ("flat", r"g_ema's input\.input has shape \(16,\), expected 4 dimensions"),
        ("widths", r"its channel widths \(4: 8, 8: 16, 16: 16, 32: 8\) do not follow StyleGAN2's schedule"),
    ],
)
def test_bad_checkpoints_give_one_line_errors(tmp_path: Path, golden32: dict, how: str, message: str) -> None:
    path = write(tmp_path, _damaged(golden32["checkpoint"], how), f"{how}.pt")
    with pytest.raises(SynthdbError, match=message) as caught:
        Generator.load(path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(str(path))
    assert "rosinality/stylegan2-pytorch's train.py or convert_weight.py" in text


def test_truncated_file_names_the_readable_formats(tmp_path: Path, golden32: dict) -> None:
    path = write(tmp_path, golden32["checkpoint"])
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(SynthdbError, match=r"ckpt\.pt is not a readable .*or a rosinality checkpoint$"):
        Generator.load(path)
