"""The operator's session with Redis: the link, the quota store, who they are, and whether they may write.

The one object of a front end that writes. Widgets and screens never reach Redis themselves: they post
what the operator asked for (`TierPanel.EditRequested`, `GuardPanel.AcceptRequested`) and the app calls
this session, whose every write refuses up front in a read-only console (a `--read-only` console, the
wall, `serve` and a replay are readers: nothing they do can write). Textual-free, like the whole core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from quotas.model import QuotaError
from surgewatch.plan import redis_connector
from surgewatch.settings import Settings

if TYPE_CHECKING:
    from quotas.backup import Outcome as RestoreOutcome
    from quotas.model import Quota, QuotaSpec
    from quotas.preview import Impact
    from quotas.store import QuotaStore
    from surgewatch.guard.board import Proposal


class ReadOnlySession(QuotaError):
    """A write asked of a reader (a read-only console, the wall, `serve`, a replay): refused, nothing sent."""


class Session:
    """One console's Redis link: opened on first use by whichever worker needs it first, the store once
    it is open, the operator's name as the audit log records it, and the read-only switch."""

    def __init__(self, settings: Settings, *, actor: str | None = None, read_only: bool = False) -> None:
        self.settings = settings
        self.read_only = read_only
        self._actor = actor
        self.connector: Any = redis_connector(settings) if settings.redis_url else None
        self.client: Any = None
        self.store: QuotaStore | None = None

    @property
    def configured(self) -> bool:
        """Whether a Redis is configured at all (else: this host and its GPUs only)."""
        return self.connector is not None

    @property
    def actor(self) -> str:
        """Who writes, as the audit log names them (`--actor`, else the user and host)."""
        if self._actor is None:
            from quotas.actor import default_actor

            self._actor = default_actor()
        return self._actor

    def adopt(self) -> None:
        """Take the client a collector opened first (the traffic worker), so the store needs no second link."""
        if self.connector is not None and self.connector.resolved is not None:
            self._make_store(self.connector.resolved)

    async def open_store(self) -> QuotaStore:
        """The quota store, once the Redis client is open (Unreachable while it cannot be)."""
        if self.connector is None:
            raise QuotaError("no Redis configured: give --redis URL")
        return self._make_store(await self.connector.client())

    async def redis(self) -> Any:
        """The open Redis client (opened here when no worker has yet)."""
        await self.open_store()
        return self.client

    def _make_store(self, client: Any) -> QuotaStore:
        if self.store is None:
            from quotas.store import QuotaStore

            self.client = client
            # readers get a reading store: its reads never write (an override past its end is shown ended)
            self.store = QuotaStore(client, prefix=self.settings.prefix, timeout_s=3.0, read_only=self.read_only)
        return self.store

    def primaries(self) -> int:
        """How many masters a Redis Cluster has (0: one server or Sentinel), for the header."""
        from quotas.connect import is_cluster

        client: Any = self.connector.resolved if self.connector is not None else None
        return len(client.get_primaries()) if client is not None and is_cluster(client) else 0

    async def reload_cluster_map(self) -> None:
        """After a failover: reload a cluster client's map of slots and masters (redis-py updates it only for the
        slots a MOVED named, so until then the demoted master still counts among the primaries)."""
        client: Any = self.connector.resolved if self.connector is not None else None
        manager = getattr(client, "nodes_manager", None)  # redis-py's, below its client API (bounded in pyproject)
        if client is not None and manager is not None:
            from quotas.connect import is_cluster

            if is_cluster(client):
                await asyncio.wait_for(manager.initialize(), 5.0)

    def missing(self, what: str) -> str | None:
        """Why `what` cannot be done for want of a store (no Redis configured, not connected yet), or None."""
        if self.store is not None:
            return None
        if self.connector is None:
            return f"No Redis configured: give --redis URL to {what}."
        return f"Not connected to Redis yet: cannot {what} now."

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlySession(f"read-only console: {what} is not possible here")

    # ----- reads
    async def preview(self, tier: str, spec: QuotaSpec, *, minutes: int) -> Impact:
        """What `spec` would have refused over the last minutes (a what-if: reads only)."""
        return await (await self.open_store()).preview(tier, spec, minutes=minutes)

    # ----- the writes: each one the operator asked for, as the operator, compare-and-set
    async def set_quota(self, tier: str, spec: QuotaSpec, *, reason: str, expect_version: int,
                        for_s: int | None = None) -> Quota:
        """Write a tier's quota if it is still at `expect_version` (a Conflict names who changed it)."""
        self._writable("changing a quota")
        store = await self.open_store()
        return await store.set(tier, spec, actor=self.actor, reason=reason, expect_version=expect_version,
                               for_s=for_s)

    async def restore(self, quotas: Sequence[Quota], *, reason: str) -> list[RestoreOutcome]:
        """Write back the last-known quotas of tiers that lost theirs (CAS, one audit entry each)."""
        self._writable("restoring quotas")
        from quotas.backup import Saved, restore

        return await restore(await self.open_store(), [Saved.of(q) for q in quotas], actor=self.actor, reason=reason)

    async def accept(self, proposal: Proposal) -> Quota:
        """Write the guard's proposal as the operator's own change (the guard leaves that tier be)."""
        self._writable("accepting a guard proposal")
        from surgewatch.guard.board import Board

        store = await self.open_store()
        return await Board(self.client, self.settings.prefix).accept(store, proposal, self.actor)

    async def dismiss(self, proposal: Proposal) -> None:
        """Dismiss the guard's proposal (the guard leaves that tier alone for its cool-down)."""
        self._writable("dismissing a guard proposal")
        from surgewatch.guard.board import Board

        await self.open_store()
        await Board(self.client, self.settings.prefix).dismiss(proposal, self.actor)

    async def aclose(self) -> None:
        if self.connector is not None:
            await self.connector.aclose()
