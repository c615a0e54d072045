"""Where the twin serves franky-sim: a loopback address whose libfranka ports are free.

franky-sim binds the FR3's command port (TCP 1337) and the Franka Hand's (TCP 1338) on one address, so two
twins on one host (two launches in different ROS domains, an eval beside a launch) need two addresses.
`--sim-host auto` (the default) takes 127.0.0.1 when it is free, else the first free 127.0.0.x.

A twin binds its ports seconds after its launcher chose the address (MuJoCo loads first), so two launches
started together both found 127.0.0.1 free and the second twin died. The launcher that chooses an address
therefore also claims it for its lifetime: an exclusive `flock` on `<tmp>/dm1-franky-sim-<host>.lock`, which
the kernel drops when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from pathlib import Path

AUTO = "auto"
FRANKY_SIM_PORTS = (1337, 1338)  # robot commands, gripper (franky_sim.franka_*_server)
_CLAIMS: dict[str, int] = {}  # host -> the lock file this process holds (`claim_host`)


def ports_free(host: str, ports: tuple[int, ...] = FRANKY_SIM_PORTS) -> bool:
    """Whether a server can listen on every one of `ports` at `host` now (as franky-sim binds them)."""
    for port in ports:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
                sock.listen(1)
            except OSError:
                return False
    return True


def claim_host(host: str) -> bool:
    """Claim `host` for this process's lifetime (a non-blocking exclusive flock); False when another process
    holds it. True also where no lock file can be made here (the port check alone decides then)."""
    if host in _CLAIMS:
        return True
    try:
        fd = os.open(
            Path(tempfile.gettempdir()) / f"dm1-franky-sim-{host}.lock", os.O_RDWR | os.O_CREAT, 0o666
        )
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _CLAIMS[host] = fd
    return True


def claimed_hosts() -> list[str]:
    """The addresses this process claims now."""
    return sorted(_CLAIMS)


def release_host(host: str) -> None:
    """Give up this process's claim on `host` (nothing when it holds none)."""
    if (fd := _CLAIMS.pop(host, None)) is not None:
        os.close(fd)  # closing the only descriptor of the open file drops the flock


def resolve_sim_host(requested: str, claim: bool = True) -> tuple[str, str | None]:
    """The twin's address for `requested` ("auto" or an address, used as given) and a note when "auto" did
    not get 127.0.0.1. With `claim` (a launcher), "auto" claims the address it returns (`claim_host`) until
    this process ends or `release_host`; without it (a dry run) it only skips the claimed ones. Raises
    OSError when no 127.0.0.x address is unclaimed with the ports free."""
    if requested != AUTO:
        return requested, None
    for last in range(1, 255):
        host = f"127.0.0.{last}"
        held = host in _CLAIMS
        if not claim_host(host):
            continue  # another launch chose it: its twin may not listen yet
        usable = ports_free(host)
        if not (usable and claim) and not held:
            release_host(host)
        if usable:
            return host, None if last == 1 else _note(host)
    raise OSError(
        "no loopback address 127.0.0.1-254 has the franky-sim ports 1337 and 1338 free and unclaimed by "
        "another launch"
    )


def _note(host: str) -> str:
    return (
        f"127.0.0.1 serves another franky-sim (another twin, or a launch starting one): the twin uses {host}"
    )
