"""Who is changing a quota: `--as NAME`, else the login user plus the SSH client address if any."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping


def ssh_client_address(env: Mapping[str, str] | None = None) -> str | None:
    """The SSH client's address from SSH_CLIENT ("ip port lport") or SSH_CONNECTION, else None."""
    env = os.environ if env is None else env
    for var in ("SSH_CLIENT", "SSH_CONNECTION"):
        parts = (env.get(var) or "").split()
        if parts:
            return parts[0]
    return None


def login_user(env: Mapping[str, str] | None = None) -> str:
    """The login user's name (LOGNAME/USER/pwd), or 'unknown' when the system cannot say."""
    env = os.environ if env is None else env
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if env.get(var):
            return env[var]
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in a bare container
        return "unknown"


def default_actor(env: Mapping[str, str] | None = None, *, as_name: str | None = None) -> str:
    """`as_name` when given, else `user` or `user@ssh-client-ip`."""
    if as_name:
        return as_name
    user = login_user(env)
    addr = ssh_client_address(env)
    return f"{user}@{addr}" if addr else user
