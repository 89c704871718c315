"""One source for every network default: the CLI's options and the API's parameters both read
``synthdb.defaults``, so changing a default there changes it everywhere, and the two never drift apart."""

from __future__ import annotations

import dataclasses
import inspect

import click
import pytest

from synthdb import defaults
from synthdb.cli.main import cli
from synthdb.embed_dataset import embed_dataset
from synthdb.generate.references import ReferenceParams
from synthdb.generate.variations import VariationParams
from synthdb.latent.project import ProjectionParams


def option_default(path: list[str], name: str) -> object:
    """The default of option ``--name`` of the command ``synthdb PATH...``."""
    command: click.Command = cli
    for part in path:
        assert isinstance(command, click.Group)
        command = command.commands[part]
    (option,) = [p for p in command.params if p.name == name]
    return option.default


@pytest.mark.parametrize(
    ("path", "option", "value"),
    [
        (["generate", "references"], "generator", defaults.GENERATOR),
        (["generate", "references"], "embedder", defaults.EMBEDDER),
        (["generate", "references"], "truncation", defaults.TRUNCATION),
        (["generate", "variations"], "generator", defaults.GENERATOR),
        (["generate", "variations"], "embedder", defaults.EMBEDDER),
        (["generate", "image"], "truncation", defaults.TRUNCATION),
        (["project"], "generator", defaults.GENERATOR),
        (["project"], "embedder", defaults.EMBEDDER),
        (["project"], "detector", defaults.PROJECTION_DETECTOR),
        (["project"], "truncation", defaults.TRUNCATION),
        (["embed"], "model", defaults.EMBEDDER),
        (["embed"], "detector", defaults.DETECTOR),
    ],
)
def test_cli_defaults_are_the_defaults_module(path: list[str], option: str, value: object) -> None:
    assert option_default(path, option) == value


def test_api_defaults_are_the_defaults_module() -> None:
    fields = {
        cls: {f.name: f.default for f in dataclasses.fields(cls)}
        for cls in (ReferenceParams, VariationParams, ProjectionParams)
    }
    for cls in fields:
        assert (fields[cls]["generator"], fields[cls]["embedder"]) == (defaults.GENERATOR, defaults.EMBEDDER)
    assert fields[ReferenceParams]["truncation"] == defaults.TRUNCATION
    assert fields[ProjectionParams]["truncation"] == defaults.TRUNCATION
    assert fields[ProjectionParams]["detector"] == defaults.PROJECTION_DETECTOR
    parameters = inspect.signature(embed_dataset).parameters
    assert parameters["model"].default == defaults.EMBEDDER
    assert parameters["detector"].default == defaults.DETECTOR
