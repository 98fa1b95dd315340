"""The test servers' ports: a port picked free but taken before the server binds it is picked again."""

from __future__ import annotations

import socket

import pytest
import redis

from sim.valkey import PortTaken, ValkeyProcess


def _hold(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.listen(1)
    return s


def test_a_cluster_node_whose_bus_port_was_taken_starts_on_new_ports() -> None:
    """Another process takes the picked bus port before the node binds it: the node starts on fresh ports."""
    node = ValkeyProcess(cluster=True)
    assert node.cluster_port is not None
    taken_bus = node.cluster_port
    holder = _hold(taken_bus)
    try:
        with node:
            assert node.cluster_port != taken_bus
            assert redis.Redis(port=node.port, socket_timeout=5).ping()
    finally:
        holder.close()


def test_a_server_whose_client_port_was_taken_starts_on_a_new_port() -> None:
    """The picked client port is taken before the start: the server moves to another and answers there."""
    node = ValkeyProcess()
    taken = node.port
    holder = _hold(taken)
    try:
        with node:
            assert node.port != taken
            assert redis.Redis(port=node.port, socket_timeout=5).ping()
    finally:
        holder.close()


def test_a_port_given_by_the_caller_is_never_moved() -> None:
    """A server asked for a port in use fails (a restart on the same port must not silently move)."""
    holder = _hold(0)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(PortTaken):
            ValkeyProcess(port).start()
    finally:
        holder.close()
