"""Helper process for bench/sweep.py: N loopback "nodes", one port each, serving 8-GPU dcgm-exporter pages.

One asyncio process serves every port (hundreds of nodes cost sockets, not processes). Each page is
built once from the real L4 capture's lines plus the other default dcgm-exporter counters (40 metrics
per GPU, every line with dcgm-exporter's 7 labels), with a distinct UUID and Hostname per node.
Prints one JSON line {"ports": [...]} when listening; stops on stdin EOF.

    python bench/sweep_nodes.py 128 [--gpus 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

CAPTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "dcgm-exporter-L4.prom"
# dcgm-exporter default counters not in the L4 capture (so a page has 40 metrics per GPU)
EXTRA = [
    "DCGM_FI_DEV_MAX_SM_CLOCK", "DCGM_FI_DEV_SLOWDOWN_TEMP", "DCGM_FI_DEV_SHUTDOWN_TEMP",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "DCGM_FI_DEV_RETIRED_SBE", "DCGM_FI_DEV_RETIRED_DBE",
    "DCGM_FI_DEV_RETIRED_PENDING", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_PROF_SM_OCCUPANCY", "DCGM_FI_PROF_PIPE_FP16_ACTIVE",
]


def make_page(node: int, gpus: int = 8) -> bytes:
    """An 8-GPU page shaped like dcgm-exporter's: HELP/TYPE then one line per GPU per metric."""
    lines = CAPTURE.read_text().splitlines()
    samples = [ln for ln in lines if ln and not ln.startswith("#")]
    template = samples[0]
    labels_start = template.index("{")
    labels = template[labels_start:template.index("}") + 1]
    metrics = [(s[:s.index("{")], s.rsplit(" ", 1)[1]) for s in samples]
    metrics += [(name, "3" if name.endswith("REASONS") else "0") for name in EXTRA]
    out = []
    for name, value in metrics:
        out.append(f"# HELP {name} {name.replace('DCGM_FI_', '').lower()}.")
        out.append(f"# TYPE {name} gauge")
        for g in range(gpus):
            lab = (labels.replace('gpu="0"', f'gpu="{g}"')
                   .replace("1343419b1a1c", f"{node:06x}{g:06x}")
                   .replace("i-030791dc5a37cd257", f"gpu-node-{node:04d}")
                   .replace('device="nvidia0"', f'device="nvidia{g}"'))
            out.append(f"{name}{lab} {value}")
    return ("\n".join(out) + "\n").encode()


async def serve(n: int, gpus: int) -> None:
    served = 0

    async def handler_for(body: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal served
            try:
                while await reader.readline():
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    # every answer differs (as if the exporter had refreshed since the last sweep), so
                    # every sweep parses every page: the collector skips a page it has seen already
                    served += 1
                    page = body + b"# scrape %d\n" % served
                    head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                            f"Content-Length: {len(page)}\r\n\r\n").encode()
                    writer.write(head + page)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
        return handle

    servers = []
    for i in range(n):
        srv = await asyncio.start_server(await handler_for(make_page(i, gpus)), "127.0.0.1", 0, backlog=1024)
        servers.append(srv)
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"ports": ports}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    for s in servers:
        s.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("nodes", type=int)
    p.add_argument("--gpus", type=int, default=8)
    a = p.parse_args()
    asyncio.run(serve(a.nodes, a.gpus))


if __name__ == "__main__":
    main()
