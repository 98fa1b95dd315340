"""A Redis Cluster primary that does not answer, named with the tiers it serves, in the operator's words.

The traffic poll names a primary that timed out while it read it; when the poll is cut off before it got that
far, a master of the last poll that has left the client's primaries is the silent one (a killed master drops
out of the slot map before its replica is elected).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def silent_node(name: str, tiers: Iterable[str], why: str) -> str:
    """One line for a primary that does not answer, and what it costs the gateways."""
    tiers = sorted(tiers)
    whose = f" (master of tier{'s' if len(tiers) > 1 else ''} {', '.join(tiers)})" if tiers else ""
    return (f"Redis cluster node {name}{whose} does not answer ({why}): a failover to its replica may be "
            "under way; gateways' decisions for those tiers fail until it ends (fail_open decides)")


def left_primaries(last_masters: Mapping[str, str], primaries: set[str]) -> list[str]:
    """The masters of the last poll (tier -> master) that are no longer primaries, each named as silent."""
    gone: dict[str, list[str]] = {}
    for tier, master in last_masters.items():
        if master and master not in primaries:
            gone.setdefault(master, []).append(tier)
    return [silent_node(name, tiers, "it left the cluster's primaries") for name, tiers in sorted(gone.items())]
