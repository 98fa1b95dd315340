"""The console (Pilot) on a real 3-master, 3-replica Valkey cluster and through a real Sentinel."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from quotas.connect import open_client
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from surgewatch.settings import Settings
from tests.cluster_fixtures import Cluster, SentinelGroup, cluster, flush, sentinel_group  # noqa: F401
from tui.app import create_app
from tui.testing import screen_text, wait_until


@pytest.fixture
async def store(cluster: Cluster) -> AsyncIterator[QuotaStore]:  # noqa: F811
    """A seeded store on the emptied module cluster, through the detected cluster client."""
    flush(cluster)
    client = await open_client(cluster.url, socket_timeout=3)
    s = QuotaStore(client)
    await s.init()
    yield s
    await client.aclose()


async def test_console_shows_every_tier_and_an_external_change(cluster: Cluster, store: QuotaStore) -> None:  # noqa: F811
    """Given one node's URL the console shows every tier with its traffic; a change made elsewhere (on another
    master's slot) arrives through the change feed alone, with its actor in the events."""
    app = create_app(Settings(redis_url=cluster.url, interval_s=0.2), sources=["traffic"], actor="tester")
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: app.state.traffic is not None and len(app.state.traffic.tiers) == 5,
                         what="five tiers", timeout=20)
        text = screen_text(app)
        assert all(t in text for t in ("free", "plus", "pro", "team", "enterprise")) and "cluster of 3 masters" in text
        assert app.state.banner()[1] == ""
    feed_only = create_app(Settings(redis_url=cluster.url, interval_s=0.2), sources=(), actor="tester")
    async with feed_only.run_test(size=(160, 50)) as pilot:  # no traffic poll: only the feed can bring it
        await wait_until(pilot, lambda: "team" in feed_only.state.quotas, what="quotas read", timeout=20)
        q = await store.set("team", QuotaSpec(42, 3600), actor="erin", reason="from another terminal")
        await wait_until(pilot, lambda: feed_only.state.quotas["team"].version == q.version, what="change shown")
        assert any("erin" in e.text and "team" in e.text for e in feed_only.state.events)


async def test_console_through_sentinel(sentinel_group: SentinelGroup) -> None:  # noqa: F811
    """Through a Sentinel: tiers shown, the master's address in the header, the password never."""
    client = await open_client(sentinel_group.url)
    await QuotaStore(client).init()
    await client.aclose()
    app = create_app(Settings(redis_url=sentinel_group.url, interval_s=0.2), sources=["traffic"], actor="tester")
    async with app.run_test(size=(160, 50)) as pilot:
        master = f"127.0.0.1:{sentinel_group.current_master()}"
        await wait_until(pilot, lambda: f"master {master}" in str(app.sub_title), what="master in the header",
                         timeout=20)
        assert "free" in app.state.quotas and not app.state.banner()[1]
