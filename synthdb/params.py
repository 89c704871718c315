"""One dataclass per job's parameters, whose field metadata says everything about each parameter.

A job's parameters are written once, as a dataclass (``ReferenceParams``, ``VariationParams``,
``ProjectionParams``, ``ExportOptions``, ...): the field's default is the API's and the CLI's default
(taken from :mod:`synthdb.defaults` where it depends on the networks), and its :class:`Spec` holds the help
text (with the unit), the CLI spellings, the allowed range and the choices. ``synthdb.cli.params`` turns
the specs into click options and click types, and :func:`check_fields` validates an instance with the same
rules, so a value the command line refuses is refused by the Python API too, with the same message, and
the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import MISSING, dataclass
from typing import Any

from synthdb.errors import SynthdbError

KEY = "synthdb"
"""The field-metadata key of a :class:`Spec`."""


@dataclass(frozen=True)
class Spec:
    """What a parameter is: ``help`` (naming its unit), ``flags`` (CLI spellings; default ``--field-name``;
    ``--a/--b`` for a boolean pair), ``hidden`` (old spellings still accepted, not listed), the range
    ``low``..``high`` (``low_open``: ``low`` itself excluded), ``choices``, ``metavar``, and ``cli`` False
    for parameters that only the API sets (or that the command takes as an argument)."""

    help: str
    flags: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    cli: bool = True

    def range_text(self) -> str:
        """The allowed range as help shows it: ``0 < x <= pi``, ``x >= 1``; empty when unbounded."""
        strict = "<" if self.low_open else "<="
        if self.low is not None and self.high is not None:
            return f"{_number(self.low)} {strict} x <= {_number(self.high)}"
        if self.low is not None:
            return f"x {strict.replace('<', '>')} {_number(self.low)}"
        return "" if self.high is None else f"x <= {_number(self.high)}"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (one phrase), or None when it is; None values mean a default."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return f"{value!r} is not one of {', '.join(self.choices)}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if math.isnan(value):
            return "nan is not a number"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and value > self.high
        return f"{_number(value)} is outside {self.range_text()}" if below or above else None


def _number(value: float) -> str:
    """``pi`` for pi, else the shortest form of the number."""
    return "pi" if value == math.pi else f"{value:g}"


def param(default: Any = MISSING, *, factory: Any = MISSING, **spec: Any) -> Any:
    """A dataclass field with a :class:`Spec` (keyword arguments of :class:`Spec`)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={KEY: Spec(**spec)})


def count(default: Any = MISSING, **spec: Any) -> Any:
    """A count: a whole number of at least 1 (a negative or zero count is refused)."""
    return param(default, low=1, metavar="N", **spec)


def non_negative(default: Any = MISSING, **spec: Any) -> Any:
    """A number of at least 0 (coefficients, weights, iteration counts that may be 0)."""
    return param(default, low=0, **spec)


def radians(default: Any = MISSING, **spec: Any) -> Any:
    """An angle in radians in (0, pi]: thresholds and radii between embeddings (``help`` names the unit)."""
    return param(default, low=0, low_open=True, high=math.pi, metavar="RAD", **spec)


def choice(default: Any, choices: tuple[str, ...] | list[str], **spec: Any) -> Any:
    """One of ``choices``."""
    return param(default, choices=tuple(choices), **spec)


DEVICE_HELP = "torch device: cpu, cuda or cuda:N [default: cuda when visible, else cpu]."


def device_spec() -> Spec:
    """``--device``: one spelling, help and default (None: cuda when visible) for every command."""
    return Spec(DEVICE_HELP, metavar="DEVICE")


def device_param() -> Any:
    """A job's device field: None until the job resolves it (:func:`synthdb.defaults.device`)."""
    return param(None, help=DEVICE_HELP, metavar="DEVICE")


def spec_of(field: dataclasses.Field) -> Spec | None:
    return field.metadata.get(KEY)


def flag_of(field: dataclasses.Field) -> str:
    """The CLI spelling an error names: the first flag, else ``--field-name``."""
    spec = spec_of(field)
    first = spec.flags[0].split("/")[0] if spec and spec.flags else f"--{field.name.replace('_', '-')}"
    return first


def specified(obj: Any) -> Iterator[tuple[dataclasses.Field, Spec, Any]]:
    """(field, spec, value) of every field with a spec, nested parameter dataclasses included."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from specified(value)
        elif (spec := spec_of(field)) is not None:
            yield field, spec, value


def check_fields(obj: Any) -> None:
    """Refuse the first value outside its spec's range or choices, naming the flag: the CLI's rule, for the
    API. (The option parser applies the same :meth:`Spec.problem` to what the user types.)"""
    for field, spec, value in specified(obj):
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if (problem := spec.problem(item)) is not None:
                raise SynthdbError(f"{flag_of(field)} {problem}")


def params_from(cls: type, data: dict[str, Any], run_id: int | None = None) -> Any:
    """Rebuild a params dataclass from a run's stored params, naming keys this synthdb does not know."""
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(data) - known):
        raise SynthdbError(
            f"run {run_id} was recorded with parameters {', '.join(unknown)} that this synthdb "
            "does not know: resume it with the synthdb version that started it"
        )
    return cls(**data)
