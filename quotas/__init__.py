"""Live per-tier quotas in Redis: the model, the store, the limiter. Never imports the UI.

    from quotas.limiter import Limiter, Decision
    from quotas.store import QuotaStore, AuditEntry, Conflict, UnknownTier, Unreachable, BrokenQuota
    from quotas.errors import Unavailable, AuthFailed  # both Unreachable: fail_open covers them
    from quotas.feed import quota_events, QuotaEvent
    from quotas.actor import default_actor
"""
