"""`--sim-host auto`: the twin's franky-sim address is 127.0.0.1 unless another franky-sim serves there."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import free_loopback_host
from dm1.sim.hosts import ports_free, resolve_sim_host


@contextmanager
def listening(host: str, port: int) -> Iterator[None]:
    """A server on `host:port` for the block (nothing to do where one listens there already)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError:
            assert not ports_free(host, (port,))  # someone else serves there: just as taken
        yield
    finally:
        sock.close()


def test_auto_takes_the_next_loopback_address_while_127_0_0_1_serves_a_twin() -> None:
    with listening("127.0.0.1", 1337):
        host, note = resolve_sim_host("auto")
        assert host != "127.0.0.1" and host.startswith("127.0.0.") and ports_free(host)
        assert note == f"127.0.0.1 serves another franky-sim (another twin): the twin uses {host}"


def test_a_taken_gripper_port_alone_makes_an_address_busy() -> None:
    host = free_loopback_host()
    assert ports_free(host)
    with listening(host, 1338):
        assert not ports_free(host)
    assert ports_free(host)


def test_an_explicit_address_is_used_as_given() -> None:
    host = free_loopback_host()
    with listening(host, 1337):
        assert resolve_sim_host(host) == (host, None)  # taken or not: the twin then says why it cannot serve
