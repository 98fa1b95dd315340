"""Each rule exists once: every constant the Lua library and Python share is pinned together here."""

from __future__ import annotations

import re

import pytest

from quotas import codec, keys, limiter, model
from quotas.library import library_source, library_version


def lua_constant(name: str) -> str:
    """The value of `local NAME = value` in the shipped library, as written."""
    m = re.search(rf"^local {name} = (.+?)(?:\s+--.*)?$", library_source(), re.M)
    assert m, f"the library declares no local {name}"
    return m.group(1).strip()


def lua_number(name: str) -> int:
    return int(eval(lua_constant(name), {"__builtins__": {}}))  # e.g. `31 * 86400`


@pytest.mark.parametrize(
    ("lua", "python"),
    [
        ("COUNTER_TTL_S", keys.COUNTER_TTL_S),
        ("AUDIT_MAXLEN", keys.AUDIT_MAXLEN),
        ("MAX_LIMIT", model.MAX_LIMIT),
        ("MAX_WINDOW_S", model.MAX_WINDOW_S),
    ],
)
def test_numbers_agree(lua: str, python: int) -> None:
    """Limits and lifetimes the library enforces are the ones Python validates and documents."""
    assert lua_number(lua) == python


def test_strings_agree() -> None:
    """The words both sides write or match: the expiry's actor and a hash without `enforced`."""
    assert lua_constant("EXPIRED_BY") == repr(codec.EXPIRED_BY)
    assert lua_constant("NO_ENFORCED") == repr(codec.NO_ENFORCED)


def test_reason_codes_agree() -> None:
    """sw_check_many's numeric codes mean the same reasons in Lua and in the Python parser."""
    table = lua_constant("REASONS")
    lua = dict(re.findall(r"\[(\d)\] = '(\w+)'", table))
    assert [lua[str(i)] for i in range(len(lua))] == list(limiter._CODES)


def test_outcomes_and_rank_buckets_agree() -> None:
    """Every outcome the library counts is one the collector reads, and the rank buckets are the same."""
    counted = set(re.findall(r"':(\w+)'", library_source())) | set(re.findall(r"\.\. ':(\w+)'", library_source()))
    counted |= {m for m in re.findall(r"'(\w+)'", lua_constant("REASONS")) if m != "ok"}
    assert counted - {"audit", "quota"} <= set(keys.OUTCOMES)  # less key suffixes (`P{T}:audit`)
    assert lua_constant("RANK_EXACT_MAX") == str(keys.RANK_EXACT_MAX)


def test_version_is_declared_once() -> None:
    """The library's version is read from the source, not repeated in Python."""
    assert library_version() == lua_number("LIB_VERSION")
