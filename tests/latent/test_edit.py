"""LatentEdit: edits move a latent along one direction to the requested projection, neutralisation is
the reference's sequence, augmentations and DisCo offsets follow spec 8.3, any device and dtype works,
and ``synthdb latent edit`` edits a Sample file (the reference's ``-s`` clash is gone)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.latent.directions import COVARIATES, EXPRESSIONS
from synthdb.latent.edit import CovariateScaling, LatentEdit, augmentation_labels, edit_sample_file
from synthdb.store.hdf5 import H5Sample, read_sample, write_sample
from tests.conftest import CliRun
from tests.latent.test_directions import planted_set

SET = planted_set("planted")
N = {name: SET.normals[k].astype(np.float64) for k, name in enumerate(SET.names)}
NEG = {name: float(SET.neg_means[k]) for k, name in enumerate(SET.names)}
POS = {name: float(SET.pos_means[k]) for k, name in enumerate(SET.names)}


def latents(count: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 512, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_edit_moves_along_the_direction_to_strength_times_the_positive_mean() -> None:
    editor, w = LatentEdit(SET), latents()
    for name in COVARIATES:
        n = torch.from_numpy(N[name])
        for strength in (2.0, -0.5):
            out = editor.edit(w, name, strength)
            delta = out - w
            along = delta @ n
            assert torch.allclose(delta, along[:, None] * n, atol=1e-10)  # nothing moves off the direction
            assert torch.allclose(out @ n, torch.full((5,), strength * POS[name], dtype=torch.float64))
    with pytest.raises(SynthdbError, match="unknown edit 'age'"):
        editor.edit(w, "age")


def test_neutralisation_is_the_reference_sequence() -> None:
    w = latents().numpy()
    expected = w.copy()
    for name in ("pose", "illumination"):  # project onto the hyperplanes, in this order
        expected -= np.outer(expected @ N[name], N[name])
    expected += np.outer(NEG["smile"] - expected @ N["smile"], N["smile"])  # mean non-smiling side
    got = LatentEdit(SET).neutralise(torch.from_numpy(w)).numpy()
    assert np.allclose(got, expected, atol=1e-10)

    # with orthogonal directions every component lands exactly where it should
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((512, len(COVARIATES))))
    orthogonal = replace(
        SET, directions=[replace(d, normal=q[:, k].astype(np.float32)) for k, d in enumerate(SET.directions)]
    )
    editor = LatentEdit(orthogonal)
    out = editor.neutralise(torch.from_numpy(w).float())
    normals = torch.from_numpy(orthogonal.normals)
    assert torch.allclose(out @ normals[0], torch.zeros(5), atol=1e-4)
    assert torch.allclose(out @ normals[1], torch.zeros(5), atol=1e-4)
    assert torch.allclose(out @ normals[2], torch.full((5,), NEG["smile"]), atol=1e-4)
    rest = torch.from_numpy(w).float() @ normals[3:].T
    assert torch.allclose(out @ normals[3:].T, rest, atol=1e-4)  # other expressions untouched


def test_augmentation_sweeps_and_disco_offsets() -> None:
    editor, w = LatentEdit(SET), latents(3)
    scaling = CovariateScaling(pose=0.5, illumination=2.0, expression=0.75)
    out = editor.augmentation(w, scaling)
    assert out.shape == (3, 17, 512)
    assert augmentation_labels() == [
        *(f"pose_{k}" for k in range(6)),
        *(f"illumination_{k}" for k in range(6)),
        *EXPRESSIONS,
    ]
    for block, name, s in ((slice(0, 6), "pose", 0.5), (slice(6, 12), "illumination", 2.0)):
        reach = max(-NEG[name], POS[name])
        steps = torch.from_numpy(np.linspace(-reach, reach, 6) * s)
        want = w[:, None, :] + steps[None, :, None] * torch.from_numpy(N[name])
        assert torch.allclose(out[:, block], want, atol=1e-5)  # the existing component is kept
    for k, name in enumerate(EXPRESSIONS):
        assert torch.allclose(out[:, 12 + k], editor.edit(w, name, 0.75))

    offsets = editor.disco_offsets(scaling)
    for k, name in enumerate(COVARIATES):
        want = N[name] * scaling.of(name) * max(-NEG[name], POS[name])
        assert np.allclose(offsets[k].numpy(), want, atol=1e-6)


def test_edits_follow_the_latents_device_and_dtype() -> None:
    """The reference built its editor on cuda and failed on CPU latents; here the latents decide."""
    editor = LatentEdit(SET)
    assert editor.edit(latents(), "smile").dtype == torch.float64
    meta = torch.empty(2, 512, device="meta")
    assert editor.neutralise(meta).device.type == "meta"
    assert editor.augmentation(meta).shape == (2, 17, 512)
    if torch.cuda.is_available():
        cuda = latents().float().cuda()
        assert torch.allclose(editor.edit(cuda, "smile").cpu(), editor.edit(cuda.cpu(), "smile"), atol=1e-5)


def test_missing_directions_are_named() -> None:
    pose_only = replace(SET, directions=SET.directions[:1])
    with pytest.raises(SynthdbError, match="no illumination direction .* neutralisation needs: analyse with"):
        LatentEdit(pose_only).neutralise(latents())
    with pytest.raises(SynthdbError, match="no smile direction"):
        LatentEdit(pose_only).edit(latents(), "smile")


def test_edit_sample_files_through_the_api_and_the_cli(
    sqlite_ctx: Context, tmp_path, synthdb_cli: CliRun
) -> None:  # noqa: ANN001
    ctx = sqlite_ctx
    SET.save(ctx.catalog)
    w = latents(1)[0].float().numpy()
    source = tmp_path / "in.h5"
    write_sample(source, H5Sample(w_latent=w, network_type="stylegan2-tiny"))
    editor = LatentEdit(SET)
    want = editor.edit(editor.neutralise(torch.from_numpy(w)), "smile", 2.0).numpy()

    out = synthdb_cli(
        "latent", "edit", "--directions", "planted", "--input", str(source), "--edit", "smile",
        "-s", "2", "--neutralise", "--out", str(tmp_path / "cli.h5"), ws=ctx.ws.root, code=0,
    ).output  # fmt: skip
    assert "neutralised and smile x 2 with direction set planted" in out
    edited = read_sample(tmp_path / "cli.h5")
    assert edited.network_type == "stylegan2-tiny" and np.allclose(edited.w_latent, want, atol=1e-5)
    assert (
        "planted  stylegan2-tiny, protocol all: pose, illumination, smile"
        in synthdb_cli("latent", "list", ws=ctx.ws.root, code=0).output
    )

    path = edit_sample_file(ctx.catalog, "planted", source, tmp_path / "api.h5", "pose", -1.0)
    got = read_sample(path).w_latent
    assert np.allclose(got @ N["pose"], -POS["pose"], atol=1e-4)

    other = tmp_path / "other.h5"
    write_sample(other, H5Sample(w_latent=w, network_type="stylegan2-256"))
    with pytest.raises(SynthdbError, match="latents of stylegan2-256, but direction set planted describes"):
        edit_sample_file(ctx.catalog, "planted", other, tmp_path / "x.h5", "smile")
    with pytest.raises(SynthdbError, match="nothing to do"):
        edit_sample_file(ctx.catalog, "planted", source, tmp_path / "x.h5")
