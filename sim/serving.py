"""What the demo's users feel: each simulated node also runs an inference server (vLLM's /metrics names).

One model, the demo's image model, served by every GPU of a node. Figures come from the GPU model's own
queues (sim/gpu_model.py), second by second:

- a GPU's queue is first-in first-out work in GPU-seconds at full clock, served at its clock factor. A
  request arriving at fraction `u` of a second finds `backlog + (work - capacity) * u` ahead of it, so it
  waits that over the clock factor; then its image takes GEN_S of denoising at full clock (longer when
  throttled). Its first step ends FIRST_STEP_S after it starts (what a time to first token is for an image).
- a request that finds more than the gateway's timeout ahead of it is dropped by the GPU model
  (`dropped_s`): it never finishes, and counts as an `abort` (vLLM's finished_reason when the client
  went away), never in the latency histograms;
- waiting is the queued work in images, running the images in the batch being denoised (a GPU's busy
  share of BATCH), KV-cache use the share of the batch's memory held (it follows load).

Each second's arrivals are spread over SPREAD points of the second, each weighing its share of the
requests: counts are fractional inside, whole on the page (the cumulative values rounded).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from collectors.serving import model_view
from collectors.serving_parse import ModelPage, parse_server_page
from collectors.serving_samples import Missing, ReplicaSample, ServingSample
from collectors.serving_window import Rates, bucket_quantile, figures, rates_between
from sim.gpu_model import GpuSpec, GpuState
from sim.traffic import GPU_S_PER_IMAGE

if TYPE_CHECKING:
    from sim.fleet import Node

MODEL = "sdxl"  # the demo's image model
GEN_S = 4.5  # an image's denoising at full clock, in a batch (each image costs 0.4 GPU-s of it)
FIRST_STEP_S = 0.15  # the first denoising step: the image's "first token"
BATCH = 8  # images denoised together on one GPU
SPREAD = 4  # points of a second the arrivals are spread over
# vLLM's buckets (request latency; time to first token)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, math.inf)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, math.inf)
HEADLESS_WINDOW_S = 10  # the headless rows' e2e p99: over the requests of the last 10 simulated seconds


@dataclass
class Hist:
    """A histogram's per-bucket counts (not cumulative), its sum and count: fractional weights allowed."""

    bounds: tuple[float, ...]
    counts: list[float] = field(default_factory=list)
    total_s: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0.0] * len(self.bounds)

    def observe(self, v: float, weight: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += weight
        self.total_s += v * weight

    def cumulative(self) -> list[float]:
        out, run = [], 0.0
        for c in self.counts:
            run += c
            out.append(run)
        return out


@dataclass
class NodeServing:
    """One node's inference server: counters and histograms since it started, gauges of the last second."""

    e2e: Hist = field(default_factory=lambda: Hist(LATENCY_BUCKETS))
    queue: Hist = field(default_factory=lambda: Hist(LATENCY_BUCKETS))
    ttft: Hist = field(default_factory=lambda: Hist(TTFT_BUCKETS))
    finished: float = 0.0
    aborted: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    kv_frac: float = 0.0

    def observe(self, spec: GpuSpec, before: GpuState, after: GpuState, work_s: float, dt_s: float = 1.0) -> None:
        """One GPU's second: its arrivals' waits and latencies, and the requests it dropped."""
        c = after.clock_factor
        capacity_s, limit_s = c * dt_s, spec.max_queue_s * c
        arrivals = max(0.0, work_s) / GPU_S_PER_IMAGE
        if arrivals > 0:
            weight = arrivals / SPREAD
            for i in range(SPREAD):
                ahead_s = max(0.0, before.backlog_s + (work_s - capacity_s) * (i + 0.5) / SPREAD)
                if ahead_s > limit_s:
                    continue  # dropped at the gateway's timeout (the GPU model's dropped_s): an abort below
                wait_s = ahead_s / c
                self.queue.observe(wait_s, weight)
                self.ttft.observe(wait_s + FIRST_STEP_S / c, weight)
                self.e2e.observe(wait_s + GEN_S / c, weight)
                self.finished += weight
        self.aborted += after.dropped_s / GPU_S_PER_IMAGE

    def settle(self, specs: Sequence[GpuSpec], gpus: Sequence[GpuState]) -> None:
        """The gauges after the second: queued images, images in the batch, the batch's share of KV memory."""
        self.waiting = sum(g.backlog_s for g in gpus) / GPU_S_PER_IMAGE
        self.running = sum(BATCH * g.util_pct / 100.0 for g in gpus)
        full = [min(1.0, g.backlog_s / max(1e-9, s.max_queue_s * g.clock_factor)) for s, g in zip(specs, gpus,
                                                                                                strict=False)]
        kv = [0.04 + 0.86 * g.util_pct / 100.0 + 0.08 * f for g, f in zip(gpus, full, strict=False)]
        self.kv_frac = min(0.99, sum(kv) / len(kv)) if kv else 0.0


def quoted(v: str) -> str:
    return '"' + v + '"'


def _labels(extra: str = "") -> str:
    return "{" + (extra + "," if extra else "") + f'model_name="{MODEL}"' + "}"


def _hist_lines(name: str, help_text: str, h: Hist) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound, cum in zip(h.bounds, h.cumulative(), strict=True):
        le = "+Inf" if bound == math.inf else repr(bound)
        lines.append(f"{name}_bucket{_labels('le=' + quoted(le))} {round(cum)}")
    lines.append(f"{name}_sum{_labels()} {h.total_s:.3f}")
    lines.append(f"{name}_count{_labels()} {round(sum(h.counts))}")
    return lines


def render_page(s: NodeServing) -> str:
    """The node's /metrics in vLLM V1's names (gauges, counters with _total, histograms), model_name label."""
    lines = [
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{_labels()} {round(s.waiting)}",
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{_labels()} {round(s.running)}",
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{_labels()} {s.kv_frac:.4f}",
        "# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.",
        "# TYPE vllm:num_preemptions_total counter", f"vllm:num_preemptions_total{_labels()} 0",
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# TYPE vllm:request_success_total counter",
        f"vllm:request_success_total{_labels('finished_reason=' + quoted('stop'))} {round(s.finished)}",
        f"vllm:request_success_total{_labels('finished_reason=' + quoted('abort'))} {round(s.aborted)}",
        *_hist_lines("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", s.e2e),
        *_hist_lines("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
                     s.queue),
        *_hist_lines("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", s.ttft),
    ]
    return "\n".join(lines) + "\n"


class FleetLatency:
    """The fleet's e2e p99 over the last HEADLESS_WINDOW_S seconds (the headless rows), from the nodes'
    histograms summed, by Prometheus' histogram_quantile rule (collectors.serving_window)."""

    def __init__(self) -> None:
        self._seen: deque[list[float]] = deque(maxlen=HEADLESS_WINDOW_S + 1)

    def p99_s(self, servers: Iterable[NodeServing]) -> float | None:
        total = [0.0] * len(LATENCY_BUCKETS)
        for s in servers:
            for i, c in enumerate(s.e2e.cumulative()):
                total[i] += c
        self._seen.append(total)
        first = self._seen[0]
        delta = [b - a for a, b in zip(first, total, strict=True)]
        return bucket_quantile(0.99, LATENCY_BUCKETS, delta) if len(self._seen) > 1 else None


GUARD_WINDOW_S = 20  # the demo's guard reads rates and quantiles over this many simulated seconds


class ServingView:
    """What the serving collector would read of the simulated nodes at simulated second `now`: each node's
    page parsed (collectors.serving_parse), rates and quantiles between it and the page GUARD_WINDOW_S
    older (collectors.serving_window), replicas grouped per model (collectors.serving.model_view). Used by
    the demo's guard (sim/guard_hook.py), whose clock is simulated seconds, not the wall's."""

    def __init__(self) -> None:
        self._history: dict[int, deque[tuple[float, ModelPage]]] = {}

    def sample(self, nodes: Sequence[Node], now: float) -> ServingSample:
        view: list[tuple[ReplicaSample, dict[str, ModelPage], dict[str, Rates], bool]] = []
        replicas = []
        for n in nodes:
            url = f"http://{n.hostname}:8000/metrics"
            h = self._history.setdefault(n.index, deque())
            if not n.up:
                last = h[-1][0] if h else now
                r = ReplicaSample(url, "down", "cannot connect", None, last, now, kind="vllm")
                view.append((r, {}, {}, False))
                replicas.append(r)
                continue
            (page,) = parse_server_page(render_page(n.serving)).models
            h.append((now, page))
            while len(h) > 2 and now - h[1][0] >= GUARD_WINDOW_S:
                h.popleft()
            rates = {MODEL: rates_between(h[0][1], page, now - h[0][0])} if len(h) > 1 and now > h[0][0] else {}
            f = figures(MODEL, [page], list(rates.values()), Missing.WARMING_UP)
            r = ReplicaSample(url, "up", None, 1.0, now, now, kind="vllm", variant="v1", models=(f,))
            view.append((r, {MODEL: page}, rates, False))
            replicas.append(r)
        return ServingSample(now, tuple(replicas), model_view(view))


__all__ = ["MODEL", "FleetLatency", "NodeServing", "ServingView", "render_page"]
