"""The default actor in audit entries: login user, plus the SSH client address when there is one."""

from __future__ import annotations

from quotas.actor import default_actor, ssh_client_address


def test_actor_from_login_user_and_ssh_client() -> None:
    """SSH_CLIENT's first field is the client address; without SSH the actor is the bare user."""
    assert default_actor({"USER": "alice", "SSH_CLIENT": "10.0.0.7 51234 22"}) == "alice@10.0.0.7"
    assert default_actor({"LOGNAME": "bob", "SSH_CONNECTION": "2001:db8::1 5 2001:db8::2 22"}) == "bob@2001:db8::1"
    assert default_actor({"USER": "carol"}) == "carol"
    assert ssh_client_address({"SSH_CLIENT": "  "}) is None


def test_as_name_wins() -> None:
    """An explicit --as NAME is used as given."""
    assert default_actor({"USER": "alice", "SSH_CLIENT": "10.0.0.7 1 22"}, as_name="oncall-bot") == "oncall-bot"
