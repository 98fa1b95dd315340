"""A silent Redis Cluster primary is named with its tiers, also when the poll was cut off before it asked."""

from __future__ import annotations

from collectors.cluster_silence import left_primaries, silent_node


def test_a_master_that_left_the_primaries_is_named_with_every_tier_it_served() -> None:
    """free and plus were on 10.0.0.7:7001 at the last poll; it is no longer a primary: it is the silent one."""
    last = {"free": "10.0.0.7:7001", "plus": "10.0.0.7:7001", "pro": "10.0.0.8:7002"}
    named = left_primaries(last, {"10.0.0.8:7002", "10.0.0.9:7003"})
    assert named == [silent_node("10.0.0.7:7001", ["free", "plus"], "it left the cluster's primaries")]
    assert named[0].startswith("Redis cluster node 10.0.0.7:7001 (master of tiers free, plus) does not answer")


def test_no_master_left_names_nothing() -> None:
    """Every master of the last poll still a primary: nothing to name (the runner's timeout says the rest)."""
    assert left_primaries({"free": "10.0.0.7:7001"}, {"10.0.0.7:7001"}) == []
