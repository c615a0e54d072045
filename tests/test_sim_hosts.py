"""`--sim-host auto`: the twin's franky-sim address is 127.0.0.1 unless another franky-sim serves there."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import PYTHON, free_loopback_host
from dm1.sim.hosts import claim_host, ports_free, release_host, resolve_sim_host


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
        host, note = resolve_sim_host("auto", claim=False)
        assert host != "127.0.0.1" and host.startswith("127.0.0.") and ports_free(host)
        assert note == (
            "127.0.0.1 serves another franky-sim (another twin, or a launch starting one): the twin uses "
            f"{host}"
        )


CLAIM_AND_HOLD = """
import sys, time
from dm1.sim.hosts import resolve_sim_host
print(resolve_sim_host("auto")[0], flush=True)
time.sleep(60)
"""


def test_a_launch_that_chose_an_address_holds_it_before_its_twin_listens() -> None:
    """Two launches started together: the first chose 127.0.0.x, its twin is still loading (ports free),
    and the second must not choose the same address (its twin died on the taken ports before)."""
    first = subprocess.Popen([PYTHON, "-c", CLAIM_AND_HOLD], stdout=subprocess.PIPE, text=True)
    try:
        chosen = first.stdout.readline().strip()
        assert chosen.startswith("127.0.0.") and ports_free(chosen)  # nobody listens there yet
        second, note = resolve_sim_host("auto")
        try:
            assert second != chosen and ports_free(second)
            assert resolve_sim_host("auto", claim=False)[0] != chosen  # a dry run skips it too
        finally:
            release_host(second)
    finally:
        first.kill()
        first.wait(timeout=10)
    assert claim_host(chosen)  # the claim ended with its process
    release_host(chosen)


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
