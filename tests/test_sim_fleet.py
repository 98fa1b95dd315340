"""The simulated fleet and its nodes' /metrics, scraped by the real fleet collector over loopback."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors.fleet import FleetCollector
from sim.exporter import FleetServer
from sim.fleet import Fleet, NodeOutage, XidEvent
from sim.gpu_model import THROTTLE_SW_THERMAL
from tests.conftest import L4_CAPTURE

DCGM_LABELS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"}


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    """Slot airflow, identities, load jitter and misbehaviour are a function of the seed only."""
    def trace(seed: int) -> list[tuple[float, float]]:
        f = Fleet.build(4, 4, seed)
        return [(round(s.temp_mean_c, 6), round(s.util_mean_pct, 6)) for s in (f.step(20.0) for _ in range(30))]

    assert trace(3) == trace(3)
    assert trace(3) != trace(4)
    assert Fleet.build(2, 2, 3).nodes[1].identities == Fleet.build(2, 2, 3).nodes[1].identities


def test_load_balancer_spreads_work_over_up_nodes_only() -> None:
    """A down node gets no work and its GPUs idle; the others absorb it."""
    f = Fleet.build(4, 2, 0, misbehave=False)
    f.outages = [NodeOutage(node=1, at_s=1, duration_s=5)]
    stats = f.step(3.0)
    assert stats.nodes_up == 3
    assert all(g.util_pct == 0.0 for g in f.nodes[1].gpus)
    assert all(g.util_pct > 40 for n in (0, 2, 3) for g in f.nodes[n].gpus)
    for _ in range(5):
        f.step(3.0)
    assert f.nodes[1].up and f.stats().nodes_up == 4


def test_default_schedule_has_one_outage_and_one_xid() -> None:
    """The demo's misbehaviour: one node drops out and comes back, one GPU reports XID 48."""
    f = Fleet.build(16, 8, 5)
    assert len(f.outages) == 1 and len(f.xids) == 1
    o, x = f.outages[0], f.xids[0]
    ups = []
    for _ in range(80):
        f.step(50.0)
        ups.append(f.nodes[o.node].up)
    assert ups[o.at_s - 2] and not ups[o.at_s - 1] and ups[o.at_s + o.duration_s - 1]
    assert f.nodes[x.node].gpus[x.gpu].xid == 48


def _families(text: str) -> dict[str, list]:
    return {fam.name: fam.samples for fam in text_string_to_metric_families(text)}


async def test_node_page_uses_dcgm_exporter_names_and_labels() -> None:
    """Each node serves prometheus text with the real capture's metric names and exactly its label set."""
    fleet = Fleet.build(2, 3, 1, misbehave=False)
    fleet.nodes[0].gpus[1] = replace(fleet.nodes[0].gpus[1], throttle_mask=THROTTLE_SW_THERMAL)
    fleet.nodes[0].version += 1
    server = await FleetServer(fleet).start()
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            r = await client.get(server.urls[0])
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            assert (await client.get(server.urls[0].replace("/metrics", "/nope"))).status_code == 404
        fams = _families(r.text)
        real = _families(L4_CAPTURE.read_text())
        for name in ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
                     "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"):
            assert name in real and name in fams, name
        for name in ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_XID_ERRORS"):
            assert name in fams
        assert all(set(s.labels) == DCGM_LABELS for samples in fams.values() for s in samples)
        throttle = {s.labels["gpu"]: s.value for s in fams["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"]}
        assert throttle == {"0": 1.0, "1": float(THROTTLE_SW_THERMAL), "2": 1.0}
    finally:
        await server.stop()


async def test_fleet_collector_scrapes_the_simulated_nodes_through_an_outage_and_an_xid() -> None:
    """The real FleetCollector reads every node; a dropped node goes down with its last values, then comes back;
    XID shows."""
    fleet = Fleet.build(3, 2, 2, misbehave=False)
    fleet.outages = [NodeOutage(node=1, at_s=2, duration_s=2)]
    fleet.xids = [XidEvent(node=2, gpu=1, at_s=1, code=48)]
    server = await FleetServer(fleet).start()
    collector = FleetCollector(server.urls, timeout_s=2.0, min_interval_s=0.0, wait_s=2.0)
    try:
        fleet.step(2.0)  # t=1: the XID
        s1 = await collector.poll()
        assert [n.status for n in s1.nodes] == ["up", "up", "up"]
        assert len(s1.nodes[0].gpus) == 2
        g = s1.nodes[2].gpus[1]
        assert g.xid == 48 and g.ecc_uncorrected == 1
        assert g.name == "NVIDIA H100 80GB HBM3" and g.temp_slowdown_c == 87.0
        assert g.util_pct == round(fleet.nodes[2].gpus[1].util_pct)
        fleet.step(2.0)  # t=2: node 1 drops out
        s2 = await collector.poll()
        assert s2.nodes[1].status == "down" and s2.nodes[1].error
        assert len(s2.nodes[1].gpus) == 2, "last-known values kept"
        assert s2.nodes[0].status == "up"
        fleet.step(2.0)
        fleet.step(2.0)  # t=4: back
        s3 = await collector.poll()
        assert s3.nodes[1].status == "up"
    finally:
        await collector.aclose()
        await server.stop()


async def test_stopped_fleet_server_frees_its_ports() -> None:
    """After stop() nothing listens on the node ports any more."""
    server = await FleetServer(Fleet.build(3, 1, 0)).start()
    urls = server.urls
    await server.stop()
    async with httpx.AsyncClient(timeout=1) as client:
        for url in urls:
            with pytest.raises(httpx.ConnectError):
                await client.get(url)
