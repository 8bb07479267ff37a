"""Command lines generated from config dataclasses: every option is declared once, as a field.

``add_dataclass_options(parser, Config)`` adds one ``--option`` per field of ``Config`` and
``dataclass_from_args(Config, args)`` builds the config back from what the parser read:

* the option is the field's name with ``-`` for ``_``. A field whose type is a dataclass adds that
  dataclass's fields, as ``--<field>-<name>``, or as ``--<name>`` for the fields named in ``inline``;
* the help text is the field's ``#:`` comment (the comment lines right above it: the convention Sphinx's
  autodoc reads), inherited from a base class that documents it; :class:`HelpFormatter` prints the
  default, so the text never restates it;
* the type comes from the annotation: ``int``, ``float``, ``str``, ``X | None`` (default None), ``bool``
  (``--flag`` / ``--no-flag``), ``Literal[...]`` (its values are the choices), an ``Enum`` (its values; read
  with its ``parse`` classmethod where it has one, so aliases parse), ``tuple[X, X]`` (``nargs=2``) and
  ``tuple[X, ...]`` (one or more). ``field(metadata={"choices": ..., "metavar": ...})`` names choices the
  annotation cannot (a tuple defined elsewhere) or the placeholders of a tuple;
* a field without a default is a required option; ``defaults`` (an instance) replaces the class's defaults
  (a preset such as a distillation variant).

:func:`config_dict` is a config's JSON form (runs save it) and :func:`fada_rt.config.dataclass_from_dict` its inverse,
which refuses a key the dataclass does not have.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Collection, Mapping
from enum import Enum
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")

_SEP = "."  # joins a nested field's path in its argparse dest ("loop.steps")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that appends ``(default: ...)`` to every optional option's help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required:
            return action.help
        return super()._get_help_string(action)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's ``#:`` comment (lines right above it, joined), a subclass's over its bases'."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (an interactive class): no docs
            continue
        lines = source.splitlines()
        node = ast.parse(source).body[0]
        assert isinstance(node, ast.ClassDef)
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            comment: list[str] = []
            i = stmt.lineno - 2  # the line above, 0-based
            while i >= 0 and lines[i].strip().startswith("#:"):
                comment.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            if comment:
                docs[stmt.target.id] = " ".join(comment)
    return docs


@dataclasses.dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]  # ("loop", "steps")
    field: dataclasses.Field
    hint: Any
    owner: type  # the dataclass declaring the field
    flag: str  # "--steps"

    @property
    def dest(self) -> str:
        return _SEP.join(self.path)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _leaves(cls: type, *, inline: Collection[str], exclude: Collection[str], path: tuple[str, ...] = (),
            flag: str = "") -> list[_Leaf]:
    hints = _hints(cls)
    out: list[_Leaf] = []
    for f in dataclasses.fields(cls):
        here = (*path, f.name)
        if not f.init or _SEP.join(here) in exclude:
            continue
        hint = hints[f.name]
        if _is_dataclass_type(hint):
            sub = flag if _SEP.join(here) in inline else f"{flag}{f.name}-"
            out += _leaves(hint, inline=inline, exclude=exclude, path=here, flag=sub.replace("_", "-"))
        else:
            out.append(_Leaf(here, f, hint, cls, "--" + (flag + f.name).replace("_", "-")))
    return out


def _strip_optional(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _enum_type(cls: type[Enum]) -> Any:
    parse = getattr(cls, "parse", cls)

    def convert(text: str) -> Enum:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = cls.__name__
    return convert


def _argument_kwargs(leaf: _Leaf) -> dict[str, Any]:
    """argparse's type / action / nargs / choices for a field, from its annotation and metadata."""
    hint = _strip_optional(leaf.hint)
    origin = get_origin(hint)
    kw: dict[str, Any] = {}
    if hint is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        values = get_args(hint)
        kw.update(choices=values, type=type(values[0]))
    elif isinstance(hint, type) and issubclass(hint, Enum):
        kw.update(type=_enum_type(hint), choices=list(hint),
                  metavar="{" + ",".join(str(m.value) for m in hint) + "}")
    elif origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            kw.update(nargs="+", type=args[0])
        elif args and all(a is args[0] for a in args) and args[0] in (int, float, str):
            kw.update(nargs=len(args), type=args[0])
        else:
            raise TypeError(f"{leaf.owner.__name__}.{leaf.field.name}: no command-line form for {leaf.hint}")
    elif hint in (int, float, str):
        kw["type"] = hint
    else:
        raise TypeError(f"{leaf.owner.__name__}.{leaf.field.name}: no command-line form for {leaf.hint}")
    for key in ("choices", "metavar"):
        if key in leaf.field.metadata:
            kw[key] = leaf.field.metadata[key]
    if "metavar" not in kw and "choices" not in kw and "action" not in kw:
        kw["metavar"] = leaf.field.name.upper()
    return kw


_MISSING = object()


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _MISSING


def _default(cls: type, leaf: _Leaf, defaults: Any) -> Any:
    """The field's default (``_MISSING``: required): ``defaults``'s value where given, else the class's
    (a nested field's: its value in the parent field's default, which may differ from its class's)."""
    value = defaults
    if value is None:
        value = _field_default(next(f for f in dataclasses.fields(cls) if f.name == leaf.path[0]))
        if len(leaf.path) > 1 and value is _MISSING:  # a required nested dataclass: its class's defaults
            return _field_default(leaf.field)
        path = leaf.path[1:]
    else:
        path = leaf.path
    for name in path:
        value = getattr(value, name)
    return value


def _help(leaf: _Leaf) -> str:
    # a nested class without docs (its group's description says what it is for): the field's name
    doc = field_docs(leaf.owner).get(leaf.field.name) or f"{leaf.owner.__name__}.{leaf.field.name}"
    return doc.replace("%", "%%")


def _first_paragraph(cls: type) -> str:
    return (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, *, defaults: Any = None,
                          exclude: Collection[str] = (), inline: Collection[str] = (),
                          title: str | None = None) -> None:
    """Add an option per field of the dataclass ``cls`` (nested dataclasses: theirs) to ``parser``, in an
    argument group titled ``title`` (default: the class's name; a nested dataclass gets a group of its own);
    ``defaults``: an instance of ``cls`` whose values are the defaults; ``exclude``: fields (``"loop.lr"``
    for a nested one) left out, which keep their default; ``inline``: nested dataclass fields whose
    options are ``--<name>``, not ``--<field>-<name>``."""
    if defaults is not None and not isinstance(defaults, cls):
        raise TypeError(f"defaults must be a {cls.__name__}, got {type(defaults).__name__}")
    title = title or cls.__name__
    nested = _nested(cls)
    groups: dict[tuple[str, ...], Any] = {  # the class's own fields first, then each nested dataclass's
        (): parser.add_argument_group(title, _first_paragraph(cls).replace("%", "%%") or None)}
    for leaf in _leaves(cls, inline=inline, exclude=exclude):
        where = leaf.path[:-1]
        if where not in groups:
            owner, doc = nested.get(where, (cls, ""))
            description = doc or _first_paragraph(owner)
            groups[where] = parser.add_argument_group(_SEP.join((title, *where)),
                                                      description.replace("%", "%%") or None)
        default = _default(cls, leaf, defaults)
        kw = _argument_kwargs(leaf)
        if default is _MISSING:
            kw["required"] = True
        else:
            kw["default"] = default
        groups[where].add_argument(leaf.flag, dest=leaf.dest, help=_help(leaf), **kw)


def _nested(cls: type, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple[type, str]]:
    """``cls``'s nested dataclass fields, by path: their class and the field's doc."""
    out: dict[tuple[str, ...], tuple[type, str]] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if _is_dataclass_type(hints[f.name]):
            out[(*path, f.name)] = (hints[f.name], field_docs(cls).get(f.name, ""))
            out.update(_nested(hints[f.name], (*path, f.name)))
    return out


def option_flags(cls: type, *, exclude: Collection[str] = (), inline: Collection[str] = ()) -> dict[str, str]:
    """Each field's option, by path (``{"loop.steps": "--steps", ...}``), as :func:`add_dataclass_options` adds it."""
    return {leaf.dest: leaf.flag for leaf in _leaves(cls, inline=inline, exclude=exclude)}


def dataclass_from_args(cls: type[T], args: argparse.Namespace | Mapping[str, Any], *, defaults: T | None = None) -> T:
    """The ``cls`` that ``args`` (parsed with :func:`add_dataclass_options`) describe; a field without an
    option (excluded) keeps its value in ``defaults``, else the class's default. The dataclass's own checks
    (``__post_init__``) run: their ValueError is the caller's to report (``parser.error``)."""
    values = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    return _build(cls, values, (), defaults)


def _build(cls: type[T], values: dict[str, Any], path: tuple[str, ...], base: Any) -> T:
    """``cls`` from the parsed ``values`` under ``path``; a field without one keeps ``base``'s value (None:
    the class's default)."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        here = (*path, f.name)
        key = _SEP.join(here)
        if _is_dataclass_type(hints[f.name]):
            if any(k.startswith(key + _SEP) for k in values):
                # its fields default to their values in the field's default (which may not be its class's)
                sub_base = getattr(base, f.name) if base is not None else _field_default(f)
                kwargs[f.name] = _build(hints[f.name], values, here, None if sub_base is _MISSING else sub_base)
            elif base is not None:
                kwargs[f.name] = getattr(base, f.name)
        elif key in values:
            value = values[key]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        elif base is not None:
            kwargs[f.name] = getattr(base, f.name)
    return cls(**kwargs)


def config_dict(config: Any) -> Any:
    """A config's JSON form: dataclasses as dicts, tuples as lists, enums as their values."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: config_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_dict(v) for v in config]
    if isinstance(config, Enum):
        return config.value
    return config
