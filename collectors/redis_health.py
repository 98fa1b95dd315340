"""What state the Redis server is in, named: read from the replies of the traffic poll's own round trip.

The poll adds one `INFO persistence memory replication clients` to its pipeline (a read command; an ACL user
without it gets `ok` with the parts it could not learn left out, never an error). Error replies to the poll's
other commands are named too: a key of the wrong type is `bad_data` with the key and the fix, and a server
that answers `LOADING`, `OOM`, `READONLY` or `MISCONF` is that state. Two states no error reply shows, because
the poll itself only reads: `writes_paused` (CLIENT PAUSE WRITE or a failover holds every write, so every
limiter decision waits: INFO's `paused_actions`, Valkey 8+ and Redis 7.4+) and `library_missing` (FUNCTION
FLUSH, or a restart without the library: every gateway FCALL fails with "Function not found"): INFO memory's
`number_of_libraries` is 0 (FUNCTION LIST would name the library, but a `+@read` user may not run it; a server
holding another library and not ours is not seen).
"""

from __future__ import annotations

from typing import Any

from collectors.samples import RedisHealth
from quotas.errors import ErrorKind
from quotas.safe import safe

WRITES_PAUSED = "writes_paused"
LIBRARY_MISSING = "library_missing"
# the more a state stops decisions, the earlier it is named when several hold at once; a server that came back
# empty lost its library too: "no tiers" is named first (`surgewatch init` or an import fixes both)
SEVERITY = (
    ErrorKind.LOADING, ErrorKind.OUT_OF_MEMORY, ErrorKind.PERSISTENCE_ERROR, ErrorKind.READ_ONLY_REPLICA,
    WRITES_PAUSED, "no_tiers", LIBRARY_MISSING, ErrorKind.UNAVAILABLE, ErrorKind.BAD_DATA,
)
# INFO's paused_reason, in the operator's words
PAUSED_WHY = {"client_pause": "CLIENT PAUSE WRITE", "failover_in_progress": "a FAILOVER under way",
              "shutdown_in_progress": "a SHUTDOWN under way"}
REPLY_KIND = {"LOADING": ErrorKind.LOADING, "OOM": ErrorKind.OUT_OF_MEMORY, "MISCONF": ErrorKind.PERSISTENCE_ERROR,
              "READONLY": ErrorKind.READ_ONLY_REPLICA, "BUSY": ErrorKind.UNAVAILABLE,
              "MASTERDOWN": ErrorKind.UNAVAILABLE, "CLUSTERDOWN": ErrorKind.UNAVAILABLE}
# redis-py names some error replies by class and strips their code from the message
CLASS_KIND = {"BusyLoadingError": ErrorKind.LOADING, "OutOfMemoryError": ErrorKind.OUT_OF_MEMORY,
              "ReadOnlyError": ErrorKind.READ_ONLY_REPLICA, "MasterDownError": ErrorKind.UNAVAILABLE,
              "ClusterDownError": ErrorKind.UNAVAILABLE}


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def from_info(info: Any) -> list[tuple[str, str]]:
    """(status, message) for each problem an INFO reply shows; [] when it shows none or is not a dict."""
    if not isinstance(info, dict):
        return []
    out: list[tuple[str, str]] = []
    if _int(info.get("loading")):
        out.append((ErrorKind.LOADING, "Redis is loading its data set: every decision fails until it is done"))
    maxmemory, used = _int(info.get("maxmemory")), _int(info.get("used_memory"))
    if maxmemory and used >= maxmemory and str(info.get("maxmemory_policy", "")) == "noeviction":
        out.append((ErrorKind.OUT_OF_MEMORY,
                    f"Redis is out of memory ({used:,} of maxmemory {maxmemory:,} bytes used, policy noeviction): "
                    "every limiter decision fails, and gateways fail open or closed per their setting; "
                    "free memory or raise maxmemory (CONFIG SET maxmemory ...)"))
    if str(info.get("rdb_last_bgsave_status", "ok")) == "err" or str(info.get("aof_last_write_status", "ok")) == "err":
        out.append((ErrorKind.PERSISTENCE_ERROR,
                    "Redis cannot save its data to disk (MISCONF) and refuses writes: every limiter decision "
                    "fails, and gateways fail open or closed per their setting; fix the disk or the RDB/AOF "
                    "settings (see the server's log)"))
    actions = str(info.get("paused_actions", "none"))
    if actions in ("write", "all"):
        why = str(info.get("paused_reason", ""))
        left_ms = _int(info.get("paused_timeout_milliseconds"))
        left = f", {left_ms / 1000:.0f} s left" if left_ms else ""
        out.append((WRITES_PAUSED,
                    f"Redis holds every write ({PAUSED_WHY.get(why, why or 'paused')}{left}): each limiter decision "
                    "writes, so gateways get no answer within their timeout and fail open or closed per their "
                    "setting until it ends (CLIENT UNPAUSE ends it at once)"))
    if info.get("number_of_libraries") is not None and _int(info.get("number_of_libraries")) == 0:
        out.append((LIBRARY_MISSING,
                    "the limiter library 'surgewatch' is not loaded (FUNCTION FLUSH, or a restart without it): every "
                    "gateway FCALL fails with 'Function not found' until someone loads it; `surgewatch init` reloads "
                    "it (quotas are kept; a Python Limiter also reloads it on its next call)"))
    if str(info.get("role", "master")) in ("slave", "replica"):
        primary = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
        out.append((ErrorKind.READ_ONLY_REPLICA,
                    f"this Redis is a read-only replica of {primary}: decisions, which write, fail there; "
                    "point the gateways and this console at the primary"))
    return out


def from_error(reply: BaseException, key: str, what: str) -> tuple[str, str]:
    """(status, message) for an error reply to a command on `key`, which holds `what` (e.g. 'a set')."""
    text = safe(" ".join(str(reply).split()), 300)  # the server's words: made visible, never interpreted
    if type(reply).__name__ in ("MovedError", "AskError"):  # a cluster node read as one server: not a refusal
        return ErrorKind.UNAVAILABLE, (
            f"{key} lives on another Redis Cluster node ({text}): this Redis is part of a cluster; give "
            "--redis-cluster (or several startup nodes) so every key is read where it lives")
    kind = CLASS_KIND.get(type(reply).__name__) or REPLY_KIND.get(text.split(" ", 1)[0].upper())
    if kind is not None:
        return kind, f"Redis answered {text!r}"
    if text.upper().startswith("WRONGTYPE"):
        return ErrorKind.BAD_DATA, f"{key} is not {what} (WRONGTYPE): {fix_for(key)}"
    return ErrorKind.ERROR, f"Redis refused a read of {key}: {text}"


def fix_for(key: str) -> str:
    """The repair an operator can run for a key of the wrong type."""
    if key.endswith(":quota"):
        tier = key.rsplit("{", 1)[-1].split("}", 1)[0]
        return f"surgewatch quota set {tier} LIMIT/WINDOW repairs it (or restore it: surgewatch quota import FILE)"
    if key.endswith("tiers"):
        return f"redis-cli DEL {key}, then surgewatch init re-creates the registry (the quotas are kept)"
    return f"redis-cli DEL {key} (a counter: only its minute of history is lost)"


def health(problems: list[tuple[str, str]]) -> RedisHealth:
    """The most severe problem named (the rest follow in its message), or ok."""
    if not problems:
        return RedisHealth()
    rank = {k: i for i, k in enumerate(SEVERITY)}
    ordered = sorted(dict.fromkeys(problems), key=lambda p: rank.get(p[0], len(rank)))
    status, message = ordered[0]
    rest = [m for s, m in ordered[1:] if s != status]
    return RedisHealth(str(status), "; also ".join([message, *rest]))
