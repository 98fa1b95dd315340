"""A versioned codec for the recorder: frozen sample dataclasses <-> JSON-able positional lists.

Generic over dataclass fields, so a field added to a sample (say `GpuSample.mig`) is recorded without
a change here. A value is stored as the list of its fields in the class's field order; the field
names of every class are stored once per file (`schema()`), so a reader maps the stored order onto
the current classes: a field the file lacks takes its default (a recording made before the field
existed), a field the class no longer has is dropped. Positional lists rather than dicts because a
fleet of 1,024 GPUs repeats every field name 1,024 times a scrape.

Decoding is driven by the fields' type hints: a nested dataclass, `X | None`, `tuple[X, ...]`,
`dict[str, X]` and StrEnums come back as what they were (JSON would give lists and strings), so
`decode(encode(x)) == x` for every recorded class (tests/test_record_codec.py).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

from collectors.runner import Reading, SourceError
from collectors.samples import (
    FleetSample,
    GpuSample,
    GpusSample,
    HostSample,
    NodeSample,
    TierTraffic,
    TrafficSample,
)
from collectors.serving_samples import ServingSample
from quotas.model import Quota
from quotas.store import AuditEntry

CODEC_VERSION = 1
"""Bumped only when the encoding itself changes (not when a class gains a field: the schema covers that)."""

ROOTS: tuple[type, ...] = (
    GpuSample, GpusSample, HostSample, NodeSample, FleetSample, TierTraffic, TrafficSample,
    Quota, SourceError, AuditEntry, Reading, ServingSample,
)

Convert = Callable[[Any], Any] | None  # None: the JSON value is already the value (str, int, float, bool, None)


class CodecError(ValueError):
    """A stored value that does not fit the classes (a foreign or corrupt file)."""


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _reachable(roots: Sequence[type]) -> tuple[type, ...]:
    """The roots and every dataclass their fields hold (a class another engineer nests later included)."""
    seen: dict[type, None] = {}
    todo = list(roots)
    while todo:
        cls = todo.pop(0)
        if cls in seen:
            continue
        seen[cls] = None
        for hint in typing.get_type_hints(cls).values():
            stack = [hint]
            while stack:
                h = stack.pop()
                if _is_record(h):
                    todo.append(h)
                stack.extend(typing.get_args(h))
    return tuple(seen)


CLASSES = _reachable(ROOTS)
_BY_NAME: dict[str, type] = {c.__name__: c for c in CLASSES}


def schema() -> dict[str, list[str]]:
    """Field names of every recorded class, in order: stored in each file at creation."""
    return {c.__name__: [f.name for f in dataclasses.fields(c)] for c in CLASSES}


def _optional(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        return None if v is None else f(v)
    return convert


def _each_tuple(f: Convert) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        return tuple(v) if f is None else tuple(f(x) for x in v)
    return _optional(convert)


def _each_list(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return _optional(lambda v: [f(x) for x in v])


def _each_value(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return _optional(lambda v: {k: f(x) for k, x in v.items()})


def _converter(hint: Any, decoders: dict[type, Callable[[Sequence[Any]], Any]]) -> Convert:
    """How to turn the JSON form of a value of type `hint` back into the value."""
    if _is_record(hint):
        return _optional(lambda v: decoders[hint](v))
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _optional(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [_converter(a, decoders) for a in args if a is not type(None)]
        return inner[0] if len(inner) == 1 else None  # unions of plain types need nothing
    if origin is tuple:
        return _each_tuple(_converter(args[0], decoders) if args else None)
    if origin is dict:
        value = _converter(args[1], decoders) if len(args) == 2 else None
        return None if value is None else _each_value(value)  # dicts of plain values are JSON objects already
    return None  # str, int, float, bool, Literal, TypeVar (Reading.sample: recorded on its own), Any


def _encoder(hint: Any) -> Convert:
    """How to turn a value of type `hint` into its JSON form (None: it already is one)."""
    if _is_record(hint):
        return _optional(lambda v: encode(v))  # late: encode is defined below
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [_encoder(a) for a in args if a is not type(None)]
        return inner[0] if len(inner) == 1 else None
    if origin is tuple and args:
        item = _encoder(args[0])
        return None if item is None else _each_list(item)
    if origin is dict and len(args) == 2:
        value = _encoder(args[1])
        return None if value is None else _each_value(value)
    return None  # tuples of plain values, StrEnums (a str) and dicts of plain values are JSON already


def _hints(cls: type) -> tuple[list[str], dict[str, Any]]:
    return [f.name for f in dataclasses.fields(cls)], typing.get_type_hints(cls)


_ENCODE_PLANS: dict[type, tuple[list[str], list[Convert]]] = {}
for _cls in CLASSES:
    _names, _h = _hints(_cls)
    _ENCODE_PLANS[_cls] = (_names, [_encoder(_h[n]) for n in _names])


def encode(obj: Any) -> list[Any]:
    """A recorded dataclass as the list of its (encoded) fields."""
    plan = _ENCODE_PLANS.get(type(obj))
    if plan is None:
        raise CodecError(f"not a recorded class: {type(obj).__name__}")
    names, encs = plan
    return [getattr(obj, n) if e is None else e(getattr(obj, n)) for n, e in zip(names, encs, strict=True)]


def _fast_decoder(cls: type, convs: list[Convert]) -> Callable[[Sequence[Any]], Any]:
    def decode_same(v: Sequence[Any]) -> Any:
        # the file's field order is the current one: positional construction, converters where needed
        try:
            return cls(*[x if c is None else c(x) for x, c in zip(v, convs, strict=True)])
        except (TypeError, ValueError) as e:
            raise CodecError(f"bad {cls.__name__} value: {e}") from None
    return decode_same


def _mapped_decoder(cls: type, stored: Sequence[str], names: list[str], convs: list[Convert]) -> Callable[..., Any]:
    where = {n: i for i, n in enumerate(stored)}
    picks = [(n, where.get(n), c) for n, c in zip(names, convs, strict=True)]

    def decode_mapped(v: Sequence[Any]) -> Any:
        # fields missing from the file take their defaults; stored fields the class dropped are ignored
        kwargs = {n: (v[i] if c is None else c(v[i])) for n, i, c in picks if i is not None and i < len(v)}
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise CodecError(f"bad {cls.__name__} value (fields {sorted(kwargs)}): {e}") from None
    return decode_mapped


class Decoder:
    """Decodes values written with one file's schema (`stored`, from `schema()`; None: the current one)."""

    def __init__(self, stored: Mapping[str, Sequence[str]] | None = None) -> None:
        self._decoders: dict[type, Callable[[Sequence[Any]], Any]] = {}
        for cls in CLASSES:
            names, hints = _hints(cls)
            convs = [_converter(hints[n], self._decoders) for n in names]
            old = list((stored or {}).get(cls.__name__, names))
            self._decoders[cls] = (
                _fast_decoder(cls, convs) if old == names else _mapped_decoder(cls, old, names, convs)
            )

    def decode(self, cls: type, value: Any) -> Any:
        """The `cls` instance `value` (from `encode`) stands for."""
        if not isinstance(value, list):
            raise CodecError(f"bad {cls.__name__} value: {type(value).__name__}")
        return self._decoders[cls](value)
