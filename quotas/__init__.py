"""Live per-tier quotas in Redis: the model, the store, the limiter. Never imports the UI.

    from quotas import Limiter, Decision, QuotaStore, Quota, QuotaSpec
    from quotas import AuditEntry, Conflict, UnknownTier, Unreachable, Unavailable, AuthFailed, BrokenQuota
    from quotas.feed import quota_events, QuotaEvent
    from quotas.actor import default_actor

The names are imported lazily (PEP 562), so `import quotas` loads neither redis nor anything else
heavy: `surgewatch --help` does not pay for the limiter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quotas.errors import AuthFailed, BrokenQuota, Conflict, ErrorKind, Unavailable, UnknownTier, Unreachable
    from quotas.limiter import Decision, Limiter
    from quotas.model import Quota, QuotaError, QuotaSpec
    from quotas.store import AuditEntry, QuotaStore

_WHERE = {
    "Limiter": "quotas.limiter",
    "Decision": "quotas.limiter",
    "QuotaStore": "quotas.store",
    "AuditEntry": "quotas.store",
    "Quota": "quotas.model",
    "QuotaSpec": "quotas.model",
    "QuotaError": "quotas.model",
    "AuthFailed": "quotas.errors",
    "BrokenQuota": "quotas.errors",
    "Conflict": "quotas.errors",
    "ErrorKind": "quotas.errors",
    "Unavailable": "quotas.errors",
    "UnknownTier": "quotas.errors",
    "Unreachable": "quotas.errors",
}

__all__ = [
    "AuditEntry",
    "AuthFailed",
    "BrokenQuota",
    "Conflict",
    "Decision",
    "ErrorKind",
    "Limiter",
    "Quota",
    "QuotaError",
    "QuotaSpec",
    "QuotaStore",
    "Unavailable",
    "UnknownTier",
    "Unreachable",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'quotas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
