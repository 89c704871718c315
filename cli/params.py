"""Click options made from the parameter dataclasses of the jobs (:mod:`synthdb.params`).

``@options(ReferenceParams)`` adds one option per field (nested parameter dataclasses too, e.g. Langevin's),
with the field's default, help (and unit), range and choices; ``build(ReferenceParams, values)`` turns what
click parsed back into the dataclass. Ranges are checked by a click type that applies the field's own
:meth:`~synthdb.params.Spec.problem`, so the option parser refuses ``--ict -1`` or ``--num-identities 0``
with the words the API uses. Options that belong to no job (``--limit``, ``--show``) use the same types
through :func:`spec_option`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import click

from synthdb.params import Spec, device_spec, spec_of

F = TypeVar("F", bound=Callable[..., Any])
ALIAS = "__alias"


class Checked(click.ParamType):
    """``base`` (int, float or str) whose value must pass the spec: the parser's half of one rule."""

    def __init__(self, base: type, spec: Spec) -> None:
        self.base, self.spec = base, spec
        self.name = {int: "integer", float: "float"}.get(base, "text")
        self._convert = {int: click.INT, float: click.FLOAT}.get(base, click.STRING)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        value = self._convert.convert(value, param, ctx)
        if (problem := self.spec.problem(value)) is not None:
            self.fail(problem, param, ctx)
        return value

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str | None:
        if self.spec.choices:
            return f"[{'|'.join(self.spec.choices)}]"
        return self.spec.metavar


class SpecOption(click.Option):
    """An option whose help ends with its allowed range (``[default: 5; x >= 1]``), as click's ranges do."""

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if isinstance(self.type, Checked) and (text := self.type.spec.range_text()):
            extra["range"] = text
        return extra


def spec_option(
    *flags: str, spec: Spec, base: type = str, default: Any = None, hidden_alias: str | None = None, **kw: Any
) -> Callable[[F], F]:
    """One option typed and checked by ``spec`` (for the options of a command that belong to no job);
    ``hidden_alias`` is an old spelling still accepted and not listed."""
    names = [*spec.flags] or list(flags)
    kind = Checked(base, spec)
    main = click.option(
        *names,
        cls=SpecOption,
        type=kind,
        default=default,
        help=spec.help,
        show_default=default is not None,
        callback=_prefer_alias if hidden_alias else None,
        **kw,
    )
    if hidden_alias is None:
        return main
    dest = click.Option(names).name
    alias = click.option(
        hidden_alias,
        type=kind,
        hidden=True,
        expose_value=False,
        callback=lambda c, _, v: _remember(c, dest, v),
    )
    return lambda command: alias(main(command))


def _remember(ctx: click.Context, dest: str | None, value: Any) -> None:
    """A hidden alias's value, kept for its option (click processes what the command line gave first)."""
    if value is not None:
        ctx.meta[(ALIAS, dest)] = value


def _prefer_alias(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    return ctx.meta.get((ALIAS, param.name), value)


def count_option(flag: str, default: int | None, help: str, **kw: Any) -> Callable[[F], F]:
    """A whole number of at least 1 (``--limit``, ``--show``, ``--bins``, ...)."""
    return spec_option(flag, spec=Spec(help, low=1, metavar="N"), base=int, default=default, **kw)


def angle_option(flag: str, help: str) -> Callable[[F], F]:
    """An angle in radians in (0, pi], default None (the embedder's threshold); ``help`` names the unit."""
    spec = Spec(help, low=0, low_open=True, high=3.141592653589793, metavar="RAD")
    return spec_option(flag, spec=spec, base=float)


def device_option() -> Callable[[F], F]:
    """``--device``, the same everywhere: default None, which every job reads as cuda when visible."""
    return spec_option("--device", spec=device_spec())


def shard_options(command: F) -> F:
    """``--shard-index`` and ``--num-shards`` of a job-array run (default: the SLURM/SGE array, else 0/1)."""
    index = Spec("This job's shard, from 0 [default: the SLURM/SGE array task, else 0].", low=0, metavar="I")
    shards = "Number of shards [default: the job array's size, else 1]."
    command = count_option("--num-shards", None, shards)(command)
    return spec_option("--shard-index", spec=index, base=int)(command)


def _base(annotation: Any) -> tuple[type, bool]:
    """(element type, is a list) of a field annotation: ``int``, ``float | None``, ``list[str]``, ..."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return None


def _field_options(cls: type, skip: Collection[str], prefix: str) -> list[click.Option]:
    """The click options of ``cls``'s CLI fields, nested parameter dataclasses flattened (dest ``a__b``)."""
    hints = typing.get_type_hints(cls)
    out: list[click.Option] = []
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            out += _field_options(hint, (), f"{prefix}{field.name}__")
            continue
        spec = spec_of(field)
        if spec is None or not spec.cli:
            continue
        out += _options_for(field, spec, hint, f"{prefix}{field.name}")
    return out


def _options_for(field: dataclasses.Field, spec: Spec, hint: Any, dest: str) -> list[click.Option]:
    base, many = _base(hint)
    flags = list(spec.flags) or [f"--{field.name.replace('_', '-')}"]
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    if base is bool:
        main = click.Option(
            [*flags, dest], is_flag=True, default=_default(field), help=spec.help, show_default=True
        )
        return [main]
    kind = Checked(base, spec)
    default = None if many else _default(field)
    main = SpecOption(
        [*flags, dest],
        type=kind,
        default=default,
        required=required,
        multiple=many,
        help=spec.help,
        show_default=default is not None,
    )
    hidden = [
        SpecOption([old, f"{dest}{ALIAS}{i}"], type=kind, multiple=many, hidden=True)
        for i, old in enumerate(spec.hidden)
    ]
    return [main, *hidden]


def options(cls: type, skip: Collection[str] = ()) -> Callable[[F], F]:
    """Decorate a command with the options of every CLI field of the dataclass ``cls`` but ``skip``."""
    made = _field_options(cls, skip, "")

    def decorate(command: F) -> F:
        params = getattr(command, "__click_params__", [])
        params.extend(reversed(made))  # click reverses decorator-added params
        command.__click_params__ = params  # type: ignore[attr-defined]
        return command

    return decorate


def build(cls: type, values: dict[str, Any], **fixed: Any) -> Any:
    """The ``cls`` instance from the parsed ``values`` (taking out what belongs to it) and ``fixed`` fields;
    a hidden old spelling, when given, wins over the option's default."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in fixed:
            continue
        if dataclasses.is_dataclass(hints[field.name]):
            inner = field.name + "__"
            nested = {k.removeprefix(inner): values.pop(k) for k in list(values) if k.startswith(inner)}
            kwargs[field.name] = build(hints[field.name], nested)
            continue
        if field.name not in values:
            continue
        value = values.pop(field.name)
        for key in [k for k in values if k.startswith(field.name + ALIAS)]:
            alias = values.pop(key)
            if alias not in (None, ()):
                value = alias
        kwargs[field.name] = list(value) if isinstance(value, tuple) else value
    return cls(**kwargs, **fixed)
