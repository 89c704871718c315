"""The model zoo (weights lookup, `synthdb models`, `load` of every kind), `Embedder`, `synthdb crop`."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch

from synthdb import zoo
from synthdb.catalog.schema import Model
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.faces.embed import Embedder
from synthdb.files import sha256_hex
from synthdb.nets.cards import get_card, list_cards
from synthdb.nets.iresnet import IResNet
from tests.conftest import CliRun


def _iresnet_file(path: Path, depth: int = 34) -> Path:
    torch.manual_seed(0)
    torch.save(IResNet(depth).state_dict(), path)
    return path


def test_add_verifies_copies_and_registers(sqlite_ctx: Context, tmp_path: Path) -> None:
    weights = _iresnet_file(tmp_path / "mine.pth")
    assert zoo.weights_path(sqlite_ctx, "iresnet34") is None
    dest = zoo.add(sqlite_ctx, "iresnet34", weights)
    assert dest.parent == sqlite_ctx.ws.models_dir and dest.read_bytes() == weights.read_bytes()
    with sqlite_ctx.catalog.session() as session:
        row = session.scalars(sa.select(Model).where(Model.name == "iresnet34")).one()
        assert (row.kind, row.architecture, row.weights_path) == ("embedder", "iresnet34", str(dest))
    ready = {s.card.name: s for s in zoo.status(sqlite_ctx)}
    assert ready["iresnet34"].weights == dest and ready["iresnet34"].registered
    assert ready["dlib-resnet"].weights is not None  # embedded: always here
    embedder = zoo.embedder(sqlite_ctx, "iresnet34")
    assert embedder.embed(torch.rand(2, 3, 112, 112) * 255).shape == (2, 512)


def test_add_refuses_wrong_files(sqlite_ctx: Context, tmp_path: Path) -> None:
    other = _iresnet_file(tmp_path / "r18.pth", depth=18)
    with pytest.raises(SynthdbError, match="missing"):  # another architecture: keys do not match
        zoo.add(sqlite_ctx, "iresnet34", other)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(_iresnet_file(tmp_path / "ok.pth").read_bytes()[:1000])
    with pytest.raises(SynthdbError, match="cut.pth"):
        zoo.add(sqlite_ctx, "iresnet34", truncated)
    with pytest.raises(SynthdbError, match="ships with the installed package"):
        zoo.add(sqlite_ctx, "dlib-resnet", other)
    with pytest.raises(SynthdbError, match="unknown model 'nope'"):
        zoo.add(sqlite_ctx, "nope", other)
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
    from tests.nets.test_hostile_pickles import PICKLES, saved_generator, zip_bomb

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
        zoo.add(ctx, "stylegan2-ffhq-256", path)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(str(path.resolve()))
    assert not ctx.ws.models_dir.exists() or not any(ctx.ws.models_dir.iterdir())
    with ctx.catalog.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Model)).scalar_one() == 0

    sound = Generator.tiny("stylegan2-tiny").save(tmp_path / "sound.pt")
    dest = zoo.add(ctx, "stylegan2-ffhq-256", sound)
    assert dest.read_bytes() == sound.read_bytes()
    with ctx.catalog.session() as session:
        row = session.scalars(sa.select(Model).where(Model.name == "stylegan2-ffhq-256")).one()
        assert (row.kind, row.architecture, row.weights_path) == ("generator", "stylegan2", str(dest))


def test_fetch_fails_fast_offline(sqlite_ctx: Context) -> None:
    with pytest.raises(SynthdbError, match="synthdb models add"):
        zoo.fetch(sqlite_ctx, "stylegan2-ffhq-256", progress=False)


def test_embedder_api() -> None:
    embedder = zoo.embedder(None, "dlib-resnet")
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


# --- one factory, one weights lookup ------------------------------------------------------------------------


def test_load_builds_every_kind_by_name(sqlite_ctx: Context, tmp_path: Path) -> None:
    """Tiny configurations, generator files, embedded cards and detector names, each into its network."""
    from synthdb.faces.detect import DlibDetector, MtcnnDetector
    from synthdb.nets.generator import Generator

    tiny = zoo.load(None, "stylegan2-tiny")
    assert isinstance(tiny, Generator) and tiny.untrained
    from_file = zoo.load(None, str(tiny.save(tmp_path / "g.pt")))
    assert isinstance(from_file, Generator) and from_file.name == "stylegan2-tiny"
    dcgan = zoo.generator(None, "dcgan-digiface")
    assert (dcgan.name, dcgan.framing, dcgan.untrained) == ("dcgan-digiface", "digiface64", False)
    embedder = zoo.load(sqlite_ctx, "dlib-resnet")
    assert isinstance(embedder, Embedder) and (embedder.dims, embedder.preset) == (128, "dlib150")
    assert isinstance(zoo.detector(None, "mtcnn"), MtcnnDetector)
    five, sixty_eight = zoo.detector(None, "dlib"), zoo.load(None, "dlib-68pt", kind="detector")
    assert isinstance(five, DlibDetector) and isinstance(sixty_eight, DlibDetector)
    assert (five.landmarks, sixty_eight.landmarks) == (5, 68)


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("dlib-resnet", "generator", "dlib-resnet is an embedder, not a generator: pass a generator model"),
        ("stylegan2-tiny", "embedder", "stylegan2-tiny is a generator, not an embedder"),
        ("mtcnn", "embedder", "mtcnn is a detector, not an embedder"),
        ("nope", None, "no model 'nope': not a file, and not one of stylegan2-tiny"),
        ("nope", "detector", "no detector 'nope': not a file, and not one of dlib-5pt, dlib-68pt, mtcnn"),
        ("vgg16-imagenet", None, "vgg16-imagenet is LPIPS's trunk, not a network of its own"),
        ("lpips-vgg-v0.1", None, "LPIPS needs the weights of vgg16-imagenet and lpips-vgg-v0.1"),
        ("iresnet50", None, r"iresnet50's weights are not in this workspace \(.*\): fetch them"),
    ],
)
def test_load_refuses_with_one_line(sqlite_ctx: Context, name: str, kind: str | None, message: str) -> None:
    with pytest.raises(SynthdbError, match=message) as refused:
        zoo.load(sqlite_ctx, name, kind=kind)
    assert "\n" not in str(refused.value)


def test_a_file_is_a_generator_never_an_embedder(tmp_path: Path) -> None:
    weights = _iresnet_file(tmp_path / "mine.pth", depth=18)
    with pytest.raises(SynthdbError, match=r"no embedder '.*mine\.pth': not a file, and not one of"):
        zoo.embedder(None, str(weights))
    with pytest.raises(SynthdbError, match="unknown device 'tpu'"):
        zoo.load(None, "stylegan2-tiny", "tpu")


def test_weights_are_found_in_the_package_the_workspace_or_nowhere(
    sqlite_ctx: Context, tmp_path: Path
) -> None:
    """Embedded cards: the installed file, checked. Others: nowhere without a workspace; the models directory;
    a registered file; a registered file that vanished is not found (and the error says how to bring it)."""
    for card in (c for c in list_cards() if c.embedded):
        path = zoo.weights_path(None, card)
        assert path is not None and path.exists(), card.name
        if card.sha256:
            assert sha256_hex(path) == card.sha256, card.name
    assert zoo.weights_path(None, "iresnet34") is None
    with pytest.raises(SynthdbError, match="iresnet34's weights are looked up in a workspace: run in one"):
        zoo.embedder(None, "iresnet34")
    assert zoo.weights_path(sqlite_ctx, "iresnet34") is None
    in_dir = sqlite_ctx.ws.models_dir / get_card("iresnet34").file
    in_dir.parent.mkdir(parents=True, exist_ok=True)
    _iresnet_file(in_dir)  # copied by hand: found without registration
    assert zoo.weights_path(sqlite_ctx, "iresnet34") == in_dir
    in_dir.unlink()
    registered = zoo.add(sqlite_ctx, "iresnet34", _iresnet_file(tmp_path / "mine.pth"))
    assert zoo.weights_path(sqlite_ctx, "iresnet34") == registered
    registered.unlink()
    assert zoo.weights_path(sqlite_ctx, "iresnet34") is None
    with pytest.raises(SynthdbError, match=r"synthdb models add iresnet34 --file PATH"):
        zoo.embedder(sqlite_ctx, "iresnet34")


def test_weights_are_looked_up_only_in_the_zoo() -> None:
    """"Weight lookups: 1". Nothing but the zoo finds an installed package's files (``find_spec``; the query
    engine's DuckDB extensions are not weights) or joins a models directory with a card's file."""
    import ast

    root = Path(__file__).resolve().parents[1]
    allowed = {"find_spec": {"synthdb/zoo.py", "synthdb/analysis/query.py"}, "models_dir": {
        "synthdb/zoo.py", "synthdb/workspace.py", "synthdb/admin.py", "cli/workspace_cmds.py"}}
    found: dict[str, set[str]] = {name: set() for name in allowed}
    for path in [*root.joinpath("synthdb").rglob("*.py"), *root.joinpath("cli").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
            if name in found:
                found[name].add(str(path.relative_to(root)))
    for name, where in found.items():
        assert where <= allowed[name], f"{name} used outside the zoo: {sorted(where - allowed[name])}"
    assert "synthdb/zoo.py" in found["find_spec"]


def test_the_cli_lists_the_cards_kinds() -> None:
    from synthdb.cli.model_cmds import KINDS
    from synthdb.nets.cards import KINDS as CARD_KINDS

    assert tuple(KINDS) == CARD_KINDS


# --- the two reported bugs: a command uses the models of the workspace it was given -------------------------

CARD = "stylegan2-ffhq-256"  # a generator card only a workspace has; a saved tiny network stands in for it


@pytest.fixture
def two_workspaces(tmp_path: Path) -> Iterator[tuple[Context, Context]]:
    """WS, whose models directory holds CARD (added with `models add`), and OTHER, which holds another
    file for the same card: a command aimed at WS that read OTHER's models would give other images."""
    from synthdb.admin import init_workspace
    from synthdb.nets.generator import Generator

    ws = init_workspace(tmp_path / "ws", models_dir=str(tmp_path / "ws-models"))
    other = init_workspace(tmp_path / "other", models_dir=str(tmp_path / "other-models"))
    mine = Generator.tiny("stylegan2-tiny")
    zoo.add(ws, CARD, mine.save(tmp_path / "mine.pt"))
    with torch.no_grad():
        for parameter in mine.network.synthesis.parameters():
            parameter.mul_(-1.0)
    zoo.add(other, CARD, mine.save(tmp_path / "theirs.pt"))
    try:
        yield ws, other
    finally:
        ws.close()
        other.close()


def stored_vectors(ctx: Context, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(w, embeddings) of a generated dataset, row-aligned."""
    from synthdb.analysis.vectors import load_vectors

    w = load_vectors(ctx, name, CARD, "latent", "w").by_sample()
    e = load_vectors(ctx, name, "dlib-resnet").by_sample()
    assert np.array_equal(w.sample_ids, e.sample_ids)
    return w.vectors, e.vectors


def assert_made_with(ctx: Context, other: Context, name: str) -> None:
    """The dataset's stored embeddings are those of ``ctx``'s weights for CARD, not of ``other``'s."""
    from synthdb.generate.pipeline import Pipeline

    w, e = stored_vectors(ctx, name)
    embedder = zoo.embedder(None, "dlib-resnet")
    mine = Pipeline(zoo.generator(ctx, CARD), embedder).embed(torch.from_numpy(w)).numpy()
    theirs = Pipeline(zoo.generator(other, CARD), embedder).embed(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(e, mine, rtol=0, atol=1e-4)
    assert np.abs(e - theirs).max() > 1e-2


REFERENCES = ["generate", "references", "--num-identities", "2", "--algorithm", "random", "--batch-size", "2"]


@pytest.mark.slow
def test_references_from_outside_the_workspace_use_its_models(
    two_workspaces: tuple[Context, Context], tmp_path: Path
) -> None:
    """The report: `synthdb -w WS generate references --generator CARD` run from outside WS failed with
    "no synthdb workspace found" (the generator was loaded through a second workspace lookup from the
    current directory). A real subprocess, started outside any workspace."""
    ws, other = two_workspaces
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SYNTHDB_WORKSPACE"}
    command = [sys.executable, "-m", "synthdb.cli.main", "-w", str(ws.ws.root), *REFERENCES]
    done = subprocess.run(
        [*command, "--name", "refs", "--generator", CARD, "-q"],
        cwd=outside, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 random references in dataset refs" in done.stdout
    assert_made_with(ws, other, "refs")


def test_commands_run_inside_another_workspace_use_the_named_ones_models(
    two_workspaces: tuple[Context, Context], monkeypatch: pytest.MonkeyPatch, synthdb_cli: CliRun
) -> None:
    """The report's second half (inside another workspace its models were used silently), for references
    and for the other commands that load a card: variations, a dataset's images, a single image."""
    from PIL import Image

    from synthdb.nets.generator import to_uint8

    ws, other = two_workspaces
    monkeypatch.chdir(other.ws.root)
    monkeypatch.delenv("SYNTHDB_WORKSPACE", raising=False)

    def run(*args: str) -> str:
        return synthdb_cli(*args, "-q", ws=ws, code=0).output

    run(*REFERENCES, "--name", "refs", "--generator", CARD)
    assert_made_with(ws, other, "refs")
    run("generate", "variations", "--references", "refs", "--name", "vars", "--generator", CARD,
        "--num-variations", "2", "--dispersion-iterations", "1", "--batch-size", "4")  # fmt: skip
    assert_made_with(ws, other, "vars")

    run("generate", "images", "refs")  # the generator of the latents: CARD, from WS
    w, _ = stored_vectors(ws, "refs")
    with torch.no_grad():
        expected = to_uint8(zoo.generator(ws, CARD).synthesis(torch.from_numpy(w)))
    with Image.open(ws.ws.root / "datasets" / "refs" / "00000" / "reference.png") as image:
        assert np.array_equal(np.asarray(image), expected[0])

    out = other.ws.root / "seed.png"
    run("generate", "image", "--generator", CARD, "--seed", "3", "--out", str(out))
    mine = zoo.generator(ws, CARD)
    from synthdb.generate.render import latents_from_seed

    with torch.no_grad():
        expected = to_uint8(mine.synthesis(latents_from_seed(mine, 3, 1, 0.7)))
    with Image.open(out) as image:
        assert np.array_equal(np.asarray(image), expected[0])


@pytest.fixture(scope="module")
def with_iresnet50(tmp_path_factory: pytest.TempPathFactory, synthdb_cli: CliRun) -> Iterator[Context]:
    """A workspace to which `synthdb models add iresnet50 --file F` added a valid file for the card: the
    architecture, randomly initialised (no download)."""
    from synthdb.admin import init_workspace

    top = tmp_path_factory.mktemp("iresnet50")
    torch.manual_seed(0)
    torch.save(IResNet(50, bn_eps=2e-5).state_dict(), top / "iresnet50.pth")
    ctx = init_workspace(top / "ws", models_dir=str(top / "models"))
    synthdb_cli("models", "add", "iresnet50", "--file", str(top / "iresnet50.pth"), "-q", ws=ctx, code=0)
    try:
        yield ctx
    finally:
        ctx.close()


TINY_WITH_IRESNET50 = ("--generator", "stylegan2-tiny", "--embedder", "iresnet50")


def test_an_added_embedder_is_ready(with_iresnet50: Context, synthdb_cli: CliRun) -> None:
    listed = synthdb_cli("models", "list", "--kind", "embedder", "-q", ws=with_iresnet50, code=0).output
    assert {row.split()[0]: row.split()[2] for row in listed.splitlines()}["iresnet50"] == "ready"
    dest = with_iresnet50.ws.models_dir / get_card("iresnet50").file
    shown = synthdb_cli("models", "show", "iresnet50", "-q", ws=with_iresnet50, code=0).output
    assert re.search(rf"^weights +{re.escape(str(dest))}$", shown, re.M)


def test_references_and_variations_use_an_added_embedder(
    with_iresnet50: Context, synthdb_cli: CliRun
) -> None:
    """The report: after `models add iresnet50 --file F` the model was "ready", yet `generate references
    --embedder iresnet50` refused it (it looked for a shipped file); variations loaded it the same way."""
    from synthdb.analysis.vectors import load_vectors

    synthdb_cli(*REFERENCES, "--name", "refs", *TINY_WITH_IRESNET50, "-q", ws=with_iresnet50, code=0)
    assert load_vectors(with_iresnet50, "refs", "iresnet50").vectors.shape == (2, 512)
    synthdb_cli("generate", "variations", "--references", "refs", "--name", "vars", *TINY_WITH_IRESNET50,
                "--num-variations", "2", "--dispersion-iterations", "0", "-q",
                ws=with_iresnet50, code=0)  # fmt: skip
    assert load_vectors(with_iresnet50, "vars", "iresnet50").vectors.shape == (4, 512)


def test_projection_uses_an_added_embedder(
    with_iresnet50: Context, tmp_path: Path, synthdb_cli: CliRun
) -> None:
    """The report's second command: `project --embedder iresnet50` (its features as the perceptual loss)."""
    from PIL import Image

    from synthdb.catalog.runs import list_runs
    from synthdb.nets.generator import Generator, to_uint8

    with torch.no_grad():
        image = Generator.tiny("stylegan2-tiny").synthesis(torch.zeros(1, 512))
    Image.fromarray(to_uint8(image)[0]).save(tmp_path / "face.png")
    said = synthdb_cli("project", str(tmp_path / "face.png"), "--name", "proj", *TINY_WITH_IRESNET50,
                       "--perceptual", "embedder", "--steps", "2", "-q",
                       ws=with_iresnet50, code=0).output  # fmt: skip
    assert "1 of 1 targets projected" in said and "perceptual loss embedder" in said
    (project,) = [r for r in list_runs(with_iresnet50.catalog) if r.kind == "project"]
    assert (project.status, project.params["embedder"]) == ("succeeded", "iresnet50")
