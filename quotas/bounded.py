"""A cache of names that arrive from outside (tiers a gateway asks for), kept to a bound by forgetting its
oldest entry. Refusing new entries once full would be forever: a flood of made-up names would leave every
real tier seen afterwards outside the cache (unbatched, a Redis call per decision) until a restart."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")
CACHE_MAX = 10_000  # entries per cache: a deployment has a handful of tiers


def remember(cache: dict[K, V], key: K, value: V, bound: int = CACHE_MAX) -> None:
    """Store `key -> value`; a full cache first forgets the entry stored first (dicts keep that order). A real
    name forgotten under a flood is stored again at its next use."""
    if key not in cache and len(cache) >= bound:
        del cache[next(iter(cache))]
    cache[key] = value
