"""LiveTable's row-indexed render caches: one row evicted alone, and an index that never walks the whole cache."""

from __future__ import annotations

from typing import Any

from tui.widgets.live_table import PRUNE_MIN, RowIndexedLRU


class CountingLRU(RowIndexedLRU):
    """A RowIndexedLRU that counts its membership tests and whole-cache walks."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize, lambda k: k[0])
        self.lookups = 0
        self.walks = 0

    def __contains__(self, key: Any) -> bool:
        self.lookups += 1
        return super().__contains__(key)

    def keys(self) -> Any:
        self.walks += 1
        return super().keys()


def test_evicting_a_row_drops_its_entries_and_keeps_the_others() -> None:
    """A changed row's cached cells go; the other rows' stay cached."""
    cache = RowIndexedLRU(1000, lambda k: k[0])
    for row in ("gpu0", "gpu1"):
        for col in range(100):  # past the prune threshold: the index was pruned on the way
            cache[(row, col)] = [row, col]
    cache.evict("gpu0")
    assert all(cache.get(("gpu0", c)) is None for c in range(100))
    assert all(cache.get(("gpu1", c)) == ["gpu1", c] for c in range(100))
    assert cache.indexed("gpu0") == 0


def test_rows_with_many_live_keys_never_make_a_set_walk_the_whole_cache() -> None:
    """A full cache whose rows each hold more than the prune threshold: sets look at their own row only."""
    cache = CountingLRU(5000)
    for row in range(50):
        for col in range(PRUNE_MIN + 36):
            cache[(row, col, 0)] = 1
    cache.lookups = cache.walks = 0
    sets = 0
    for gen in range(1, 6):  # re-rendered with a new update count: new keys, the LRU dropping old ones
        for row in range(50):
            for col in range(PRUNE_MIN + 36):
                cache[(row, col, gen)] = 1
                sets += 1
    assert cache.walks == 0
    assert cache.lookups <= 4 * sets  # amortized O(1) a set (the old walk: 5,000 a set)


def test_a_rows_index_stays_bounded_when_the_lru_drops_its_keys() -> None:
    """Keys the LRU evicted on its own are forgotten: the index is at most twice the live keys, or the threshold."""
    cache = RowIndexedLRU(50, lambda k: k[0])
    for i in range(10_000):
        cache[("row", i)] = i
    live = len(cache)  # every key is the row's
    assert live == 50
    assert cache.indexed("row") <= max(PRUNE_MIN, 2 * live) + 1
