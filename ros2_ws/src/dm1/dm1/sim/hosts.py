"""Where the twin serves franky-sim: a loopback address whose libfranka ports are free.

franky-sim binds the FR3's command port (TCP 1337) and the Franka Hand's (TCP 1338) on one address, so two
twins on one host (two launches in different ROS domains, an eval beside a launch) need two addresses.
`--sim-host auto` (the default) takes 127.0.0.1 when it is free, else the first free 127.0.0.x.
"""

from __future__ import annotations

import contextlib
import socket

AUTO = "auto"
FRANKY_SIM_PORTS = (1337, 1338)  # robot commands, gripper (franky_sim.franka_*_server)


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


def resolve_sim_host(requested: str) -> tuple[str, str | None]:
    """The twin's address for `requested` ("auto" or an address, used as given) and a note when "auto" did
    not get 127.0.0.1. Raises OSError when no 127.0.0.x address has the ports free."""
    if requested != AUTO:
        return requested, None
    for last in range(1, 255):
        host = f"127.0.0.{last}"
        if ports_free(host):
            note = (
                None
                if last == 1
                else f"127.0.0.1 serves another franky-sim (another twin): the twin uses {host}"
            )
            return host, note
    raise OSError("no loopback address 127.0.0.1-254 has the franky-sim ports 1337 and 1338 free")
