"""The simulated fleet: nodes of GPUs sharing the admitted work, plus scheduled misbehaviour.

Deterministic for a seed: the per-slot airflow (some GPUs run hotter than others), the jitter of
the load balancer and the misbehaviour schedule all come from one `random.Random(seed)`.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, replace

from sim.gpu_model import GpuSpec, GpuState, initial_state, is_throttled, step, with_xid
from sim.serving import FleetLatency, NodeServing


@dataclass(frozen=True, slots=True)
class NodeOutage:
    """Node `node` stops answering at sim second `at_s` and comes back `duration_s` later."""

    node: int
    at_s: int
    duration_s: int


@dataclass(frozen=True, slots=True)
class XidEvent:
    """GPU `gpu` of node `node` reports XID `code` at sim second `at_s`."""

    node: int
    gpu: int
    at_s: int
    code: int = 48


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """The labels dcgm-exporter puts on a GPU's series."""

    index: int
    uuid: str
    pci_bus_id: str
    device: str


@dataclass
class Node:
    """One host: its GPUs' specs and states, and whether it answers."""

    index: int
    hostname: str
    specs: list[GpuSpec]
    gpus: list[GpuState]
    identities: list[GpuIdentity]
    up: bool = True
    version: int = 0  # bumped every step, so an exporter knows when to re-render
    serving: NodeServing = field(default_factory=NodeServing)  # its inference server (sim/serving.py)


@dataclass(frozen=True, slots=True)
class FleetStats:
    """Fleet-wide figures after a step, as the headless JSON reports them."""

    util_mean_pct: float
    temp_mean_c: float
    temp_max_c: float
    throttled: int
    nodes_up: int
    dropped_s: float
    e2e_p99_s: float | None = None  # over the last HEADLESS_WINDOW_S seconds; None: no request finished
    queue: float = 0.0  # requests waiting in every GPU's queue now


def default_misbehaviour(nodes: int, gpus_per_node: int, rng: random.Random) -> tuple[list[NodeOutage], list[XidEvent]]:
    """One node drops out for 20 s at 45 s; one GPU reports XID 48 at 60 s."""
    outages = [NodeOutage(node=rng.randrange(nodes), at_s=45, duration_s=20)] if nodes > 1 else []
    xids = [XidEvent(node=rng.randrange(nodes), gpu=rng.randrange(gpus_per_node), at_s=60, code=48)]
    return outages, xids


@dataclass
class Fleet:
    """All nodes. `step(work_s)` spreads one second's admitted work over the GPUs of the up nodes."""

    nodes: list[Node]
    rng: random.Random
    outages: list[NodeOutage] = field(default_factory=list)
    xids: list[XidEvent] = field(default_factory=list)
    t_s: int = 0
    driver_version: str = "550.90.07"
    latency: FleetLatency = field(default_factory=FleetLatency)

    @classmethod
    def build(
        cls,
        nodes: int = 16,
        gpus_per_node: int = 8,
        seed: int = 0,
        *,
        spec: GpuSpec | None = None,
        misbehave: bool = True,
    ) -> Fleet:
        if nodes < 1 or gpus_per_node < 1:
            raise ValueError("a fleet needs at least one node of one GPU")
        rng = random.Random(seed)
        base = spec or GpuSpec()
        built: list[Node] = []
        for n in range(nodes):
            # airflow varies by slot: the GPUs at the back of a chassis run a few degrees hotter
            specs = [
                replace(base, thermal_c_per_w=base.thermal_c_per_w * rng.uniform(0.9, 1.1))
                for _ in range(gpus_per_node)
            ]
            ids = [
                GpuIdentity(
                    index=g,
                    uuid=f"GPU-{uuid.UUID(int=rng.getrandbits(128))}",
                    pci_bus_id=f"00000000:{0x18 + 0x10 * g:02X}:00.0",
                    device=f"nvidia{g}",
                )
                for g in range(gpus_per_node)
            ]
            built.append(Node(n, f"sim-gpu-{n:03d}", specs, [initial_state(s) for s in specs], ids))
        fleet = cls(built, rng)
        if misbehave:
            fleet.outages, fleet.xids = default_misbehaviour(nodes, gpus_per_node, rng)
        return fleet

    @property
    def gpu_count(self) -> int:
        return sum(len(n.gpus) for n in self.nodes)

    def _apply_schedule(self) -> None:
        t = self.t_s
        for o in self.outages:
            if o.node < len(self.nodes):
                if t == o.at_s:
                    self.nodes[o.node].up = False
                elif t == o.at_s + o.duration_s:
                    self.nodes[o.node].up = True
        for x in self.xids:
            if t == x.at_s and x.node < len(self.nodes) and x.gpu < len(self.nodes[x.node].gpus):
                node = self.nodes[x.node]
                node.gpus[x.gpu] = with_xid(node.gpus[x.gpu], x.code)

    def step(self, work_s: float, dt_s: float = 1.0) -> FleetStats:
        """Advance one second: the load balancer spreads `work_s` GPU-seconds over the up GPUs."""
        self.t_s += 1
        self._apply_schedule()
        targets = [(n, g) for n in self.nodes if n.up for g in range(len(n.gpus))]
        weights = [self.rng.uniform(0.85, 1.15) for _ in targets]
        total_w = sum(weights) or 1.0
        share = {id(n): [0.0] * len(n.gpus) for n in self.nodes}
        for (node, g), w in zip(targets, weights, strict=False):
            share[id(node)][g] = work_s * w / total_w
        dropped = 0.0
        for node in self.nodes:
            # a node that is down gets no work (the balancer routes around it) and loses its queue
            gpus = []
            for g, (spec, state) in enumerate(zip(node.specs, node.gpus, strict=False)):
                before = state if node.up else replace(state, backlog_s=0.0)
                after = step(spec, before, share[id(node)][g], dt_s)
                node.serving.observe(spec, before, after, share[id(node)][g], dt_s)  # what its users felt
                gpus.append(after)
            node.gpus = gpus
            node.serving.settle(node.specs, gpus)
            node.version += 1
            dropped += sum(s.dropped_s for s in node.gpus)
        return replace(self.stats(dropped), e2e_p99_s=self.latency.p99_s(n.serving for n in self.nodes),
                       queue=sum(n.serving.waiting for n in self.nodes if n.up))

    def stats(self, dropped_s: float = 0.0) -> FleetStats:
        """Means over the GPUs of the nodes that are up (what a scraper can see)."""
        seen = [s for n in self.nodes if n.up for s in n.gpus] or [s for n in self.nodes for s in n.gpus]
        return FleetStats(
            util_mean_pct=sum(s.util_pct for s in seen) / len(seen),
            temp_mean_c=sum(s.temp_c for s in seen) / len(seen),
            temp_max_c=max(s.temp_c for s in seen),
            throttled=sum(1 for s in seen if is_throttled(s)),
            nodes_up=sum(1 for n in self.nodes if n.up),
            dropped_s=dropped_s,
        )
