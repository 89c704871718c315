"""The command line as a whole: options made from the jobs' parameter dataclasses (one default, one range,
one help text each), ranges refused by the option parser with the API's words, one ``--device``, old
spellings still accepted, headers on lists, one-line errors for unwritable outputs and DuckDB's hints kept."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import pytest

from synthdb.analysis.params import EvaluateParams
from synthdb.analysis.query import query
from synthdb.catalog.datasets import create_dataset
from synthdb.cli.main import cli
from synthdb.cli.params import Checked, build
from synthdb.context import Context
from synthdb.errors import SynthdbError
from synthdb.export.job import ExportOptions
from synthdb.generate.params import LangevinParams, ReferenceParams, VariationParams
from synthdb.latent.params import ProjectionParams
from synthdb.params import DEVICE_HELP
from synthdb.store.commit import NewSamples, ShardSpec, commit
from tests.conftest import CliRun


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def options() -> Iterator[tuple[str, click.Option]]:
    for name, command in commands():
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                yield name, param


def test_every_option_says_what_it_is() -> None:
    """Short flags (-k0, -r0, -ps, ...) included: every listed option has a help text."""
    missing = [
        f"{name} {'/'.join(option.opts)}" for name, option in options() if not (option.help or "").strip()
    ]
    assert not missing, missing
    shorts = [opt for _, option in options() for opt in option.opts if not opt.startswith("--")]
    assert {"-k0", "-r0", "-dt", "-gamma", "-eta0", "-kl", "-ps", "-is", "-es"} <= set(shorts)


def test_every_angle_and_radius_names_its_unit() -> None:
    """Angles (thresholds, radii between embeddings) say radians; the latent radius says it is Euclidean."""
    for name, option in options():
        words = " ".join(option.opts)
        angle = isinstance(option.type, Checked) and option.type.spec.high == math.pi
        if angle or any(w in words for w in ("radius", "threshold", "--ict", "-r0")):
            assert "radian" in option.help.lower() or "euclidean" in option.help.lower(), (name, words)
            if angle:
                assert option.type.spec.metavar == "RAD" and "radian" in option.help.lower()


def test_one_device_option_everywhere() -> None:
    """Every --device: the same help and no fixed default (cuda when visible, else cpu, at run time)."""
    devices = [(name, option) for name, option in options() if option.name == "device"]
    assert len(devices) >= 10
    for name, option in devices:
        assert option.default is None and option.help == DEVICE_HELP, name


@pytest.mark.parametrize(
    "args", [["-h"], ["stats", "-h"], ["check", "nearest", "-h"], ["evaluate", "pairs", "-h"]]
)
def test_dash_h_is_help(args: list[str], synthdb_cli: CliRun) -> None:
    out = synthdb_cli(*args)
    assert out.exit_code == 0 and out.output.startswith("Usage: ")


REFUSED = [
    (
        ["generate", "references", "--name", "x", "--num-identities", "0"],
        "'--num-identities': 0 is outside x >= 1",
    ),
    (
        ["generate", "references", "--name", "x", "--num-identities", "2", "--ict", "-1"],
        "-1 is outside 0 < x <= pi",
    ),
    (
        ["generate", "references", "--name", "x", "--num-identities", "2", "--ict", "nan"],
        "nan is not a number",
    ),
    (
        ["generate", "references", "--name", "x", "--num-identities", "2", "-r0", "4"],
        "4 is outside 0 < x <= pi",
    ),
    (
        ["generate", "references", "--name", "x", "--num-identities", "2", "--langevin-iterations", "-1"],
        "x >= 0",
    ),
    (
        ["generate", "references", "--name", "x", "--num-identities", "2", "--algorithm", "ictt"],
        "'ictt' is not one",
    ),
    (
        ["generate", "variations", "--name", "v", "--references", "r", "--num-variations", "-2"],
        "-2 is outside",
    ),
    (
        ["generate", "variations", "--name", "v", "--references", "r", "--dispersion-latent-radius", "0"],
        "0 is",
    ),
    (["check", "nearest", "q", "--against", "r", "--k", "0"], "'--k': 0 is outside x >= 1"),
    (["check", "nearest", "q", "--against", "r", "--threshold", "0"], "0 is outside 0 < x <= pi"),
    (["stats", "separability", "d", "--ict", "3.5"], "3.5 is outside 0 < x <= pi"),
    (["runs", "list", "--limit", "-1"], "-1 is outside x >= 1"),
    (["runs", "list", "--kind", "referencs"], "'referencs' is not one of 'import', 'embed'"),
    (["export", "d", "out", "--format", "recordio", "--quality", "0"], "0 is outside 1 <= x <= 100"),
    (["project", "--name", "p", "--steps", "0"], "0 is outside x >= 1"),
    (["embed", "d", "--batch-size", "0"], "0 is outside x >= 1"),
    (["evaluate", "pairs", "d", "--folds", "1"], "1 is outside x >= 2"),
    (["demo", "--num-identities", "0"], "0 is outside x >= 1"),
    (["gc", "--min-age", "-5"], "-5 is outside x >= 0"),
]


@pytest.mark.parametrize(("args", "words"), REFUSED)
def test_the_option_parser_refuses_out_of_range_values(
    args: list[str], words: str, synthdb_cli: CliRun
) -> None:
    """Refused before any workspace is opened (the one given does not exist): exit 2, the value and range."""
    out = synthdb_cli(*args, ws="/nonexistent")
    assert out.exit_code == 2 and words in out.output, out.output
    assert "Traceback" not in out.output


def test_the_api_refuses_what_the_parser_refuses() -> None:
    """The same rule and the same words, through the dataclasses the API takes."""
    cases = [
        (lambda: ReferenceParams("x", 0).check(), "--num-identities 0 is outside x >= 1"),
        (lambda: ReferenceParams("x", 2, ict=-1.0).check(), "--ict -1 is outside 0 < x <= pi"),
        (
            lambda: ReferenceParams("x", 2, langevin=LangevinParams(repulsion_radius=4.0)).check(),
            "--langevin-repulsion-radius 4 is outside 0 < x <= pi",
        ),
        (lambda: VariationParams("v", "r", num_variations=0).check(), "--num-variations 0 is outside x >= 1"),
        (
            lambda: VariationParams("v", "r", algorithm="warp").check(),
            "--algorithm 'warp' is not one of dispersion, disco, covariates",
        ),
        (lambda: ProjectionParams("p", images=["a.png"], steps=0).check(), "--steps 0 is outside x >= 1"),
        (
            lambda: ProjectionParams("p", images=["a.png"], space="z").check(),
            "--space 'z' is not one of w, w+",
        ),
        (lambda: ExportOptions(quality=0), "--quality 0 is outside 1 <= x <= 100"),
        (lambda: ExportOptions(size=4), "--size 4 is outside 8 <= x <= 4096"),
        (lambda: EvaluateParams("d", folds=1).check(), "--folds 1 is outside x >= 2"),
    ]
    for make, words in cases:
        with pytest.raises(SynthdbError) as caught:
            make()
        assert str(caught.value) == words


def parsed(path: str, args: list[str]) -> dict:
    command = dict(commands())[path]
    return dict(command.make_context(path, args).params)


def test_cli_defaults_are_the_dataclass_defaults() -> None:
    """What a command builds from its parsed options equals the dataclass built by the API: one default
    for each parameter, whichever way a job is started."""
    values = parsed("generate references", ["--name", "r", "--num-identities", "3"])
    assert build(ReferenceParams, values) == ReferenceParams("r", 3)
    values = parsed("generate variations", ["--name", "v", "--references", "r"])
    assert build(VariationParams, values) == VariationParams("v", "r")
    values = parsed("project", ["--name", "p", "--dataset", "d"])
    assert build(ProjectionParams, values, images=[]) == ProjectionParams("p", dataset="d")
    values = parsed("export", ["d", "out", "--format", "bob"])
    assert build(ExportOptions, values) == ExportOptions()
    values = parsed("evaluate pairs", ["d"])
    assert build(EvaluateParams, values, dataset="d") == EvaluateParams("d")
    values = parsed(
        "generate references", ["--name", "r", "--num-identities", "3", "-r0", "0.5", "-kl", "0.1"]
    )
    assert build(ReferenceParams, values).langevin == replace(
        LangevinParams(), repulsion_radius=0.5, latent_force=0.1
    )


def test_old_spellings_are_accepted_and_hidden(synthdb_cli: CliRun) -> None:
    values = parsed(
        "generate variations", ["--name", "v", "--references", "r", "--dispersion-num-augmentations", "7"]
    )
    assert build(VariationParams, values).num_variations == 7  # the reference's name for it
    for path, old in (("generate variations", "--dispersion-num-augmentations"), ("index build", "--per")):
        listed = synthdb_cli(*path.split(), "--help").output.splitlines()
        assert not any(line.strip().startswith(f"{old} ") for line in listed)
    assert parsed("index build", ["d", "--per", "identity"])["per"] == "identity"
    assert parsed("demo", ["--identities", "5"])["num_identities"] == 5
    assert parsed("demo", [])["num_identities"] == 24


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthdb.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_models_list_and_show_outside_a_workspace(tmp_path: Path, synthdb_cli: CliRun) -> None:
    listed = run("models", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "WEIGHTS", "USE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["dlib-resnet"][2] == "embedded" and rows["stylegan2-tiny"][2] == "untrained"
    for name in rows:  # every model the list names, tiny configurations included
        shown = synthdb_cli("models", "show", name)
        assert shown.exit_code == 0 and f"name{' ' * 8}" in shown.output, (name, shown.output)
    tiny = synthdb_cli("models", "show", "eg3d-tiny").output
    assert "UNTRAINED" in tiny and "drawn from a fixed seed" in tiny


def test_runs_list_has_a_header(sqlite_ctx: Context, synthdb_cli: CliRun) -> None:
    out = synthdb_cli("runs", "list", ws=str(sqlite_ctx.ws.root))
    assert out.exit_code == 0 and out.output.split() == [
        "ID",
        "KIND",
        "ALGORITHM",
        "STATUS",
        "DONE",
        "STARTED",
    ]


@pytest.mark.slow
def test_unwritable_outputs_are_one_line(sqlite_ctx: Context, tmp_path: Path) -> None:
    """``report --out /proc/nope`` and other outputs where nothing can be written: one line, exit 1."""
    ds = create_dataset(sqlite_ctx.catalog, "d", "synthetic", "generated")
    vectors = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    commit(
        sqlite_ctx.catalog,
        sqlite_ctx.store,
        dataset_id=ds,
        samples=NewSamples(
            keys=[f"k{i}" for i in range(6)], role="variation", identity_labels=list("aabbcc")
        ),
        shards=[ShardSpec("embedding", "m", {"embedding": vectors})],
    )
    ws = ["-w", str(sqlite_ctx.ws.root)]
    photo = str(Path(__file__).resolve().parents[1] / "data" / "faces" / "obama_01.jpg")
    for args in (
        [*ws, "report", "d", "--ict", "1.0", "--out", "/proc/nope"],
        [*ws, "stats", "histogram", "d", "--bins", "8", "--export", "/proc/nope/h.dat"],
        [*ws, "query", "SELECT 1", "-o", "/proc/nope/q.csv"],
        ["generate", "image", "--generator", "stylegan2-tiny", "--out", "/proc/nope/g.png"],
        ["crop", photo, "--from", "resize", "--to", "arcface", "--out", "/proc/nope"],
    ):
        proc = run(*args, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (
            args,
            proc.stderr,
        )
        assert "/proc/nope" in lines[0]


def test_duckdb_hints_are_kept(sqlite_ctx: Context) -> None:
    """DuckDB's "Did you mean" survives the guard, for a catalog table, a view and a function."""
    for sql, hint in (
        ("SELECT * FROM catalog.samples", 'Did you mean "catalog.sample"'),
        ("SELECT * FROM embedding", 'Did you mean "embeddings"'),
        ("SELECT lenght('a')", 'Did you mean "length"'),
    ):
        with pytest.raises(SynthdbError) as caught:
            query(sqlite_ctx, sql)
        assert hint in str(caught.value) and "\n" not in str(caught.value)
