"""Is this workstation set up to drive an FR3? Read-only checks of the kernel, limits, CPU, FCI port and DDS.

libfranka's 1 kHz loop needs a real-time kernel, real-time scheduling rights, a CPU that does not clock down
and a dedicated wired port to the control box (docs/real-robot.md §1–2). Each miss shows up later as a
`communication_constraints_violation` reflex or libfranka refusing to start; `check_host` names it before the
arm moves. Every check reads `/proc` and `/sys` (a `HostPaths` points them elsewhere for tests), the process
limits and the environment; nothing is changed and nothing is sent to the robot (`dm1 robot check` then runs
the communication check over the link).

Severity: `fail` = libfranka will not run well or at all (robot only), `warn` = a known cause of lost commands
or latency, `skip` = not visible on this machine, `ok`. With `sim=True` (franky-sim) no check fails: the
twin needs none of this, so misses are reported as `warn`.
"""

from __future__ import annotations

import ipaddress
import os
import resource
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["ok", "warn", "fail", "skip"]

CAP_IPC_LOCK = 14
CAP_SYS_NICE = 23
_CAPS = {"CAP_IPC_LOCK": CAP_IPC_LOCK, "CAP_SYS_NICE": CAP_SYS_NICE}
#: libfranka raises its control thread to the highest SCHED_FIFO priority (99).
NEEDED_RTPRIO = 99
#: docs/real-robot.md's limits.conf (`memlock 102400` KiB).
NEEDED_MEMLOCK_BYTES = 100 * 1024 * 1024
#: A gigabit link at least: the FCI exchanges a packet each millisecond each way.
MIN_LINK_MBPS = 1000
_RTF_UP, _RTF_GATEWAY = 0x1, 0x2
_DOC = "docs/real-robot.md"


@dataclass(frozen=True)
class HostFinding:
    """One check: what was found against what is expected, and what to do about it."""

    name: str
    status: Status
    found: str
    expected: str
    hint: str = ""

    def line(self) -> str:
        """`[warn] name: found (expected ...); hint` (ok and skip: found only)."""
        text = f"[{self.status:>4}] {self.name}: {self.found}"
        if self.status in ("ok", "skip"):
            return text
        text += f" (expected {self.expected})"
        return f"{text}; {self.hint}" if self.hint else text


@dataclass(frozen=True)
class HostReport:
    """All findings; `passed` when none failed."""

    findings: list[HostFinding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(f.status == "fail" for f in self.findings)

    def get(self, name: str) -> HostFinding:
        return next(f for f in self.findings if f.name == name)

    def problems(self) -> list[HostFinding]:
        return [f for f in self.findings if f.status in ("warn", "fail")]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "findings": [asdict(f) for f in self.findings]}

    def summary(self) -> str:
        head = "host check passed" if self.passed else "host check FAILED"
        return "\n".join([head, *(f"  {f.line()}" for f in self.findings)])


@dataclass(frozen=True)
class HostPaths:
    """Where the kernel's views live (a test points them into a temporary tree)."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _effective_caps(paths: HostPaths) -> int:
    for line in (_read(paths.proc / "self" / "status") or "").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _limit_text(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def check_realtime_kernel(paths: HostPaths) -> HostFinding:
    """PREEMPT_RT: `/sys/kernel/realtime` is 1, or the kernel version string says PREEMPT_RT."""
    version = _read(paths.proc / "sys" / "kernel" / "version") or "?"
    realtime = _read(paths.sys / "kernel" / "realtime") == "1" or "PREEMPT_RT" in version
    return HostFinding(
        "realtime_kernel",
        "ok" if realtime else "fail",
        f"PREEMPT_RT ({version})" if realtime else f"no PREEMPT_RT ({version})",
        "a PREEMPT_RT kernel",
        f"libfranka (RealtimeConfig.Enforce) refuses to start on it: {_DOC} §2",
    )


def _limit_check(
    paths: HostPaths, getrlimit: Callable[[int], tuple[int, int]], name: str, needed: int, cap: str
) -> tuple[bool, str]:
    """Whether the soft limit `name` reaches `needed` (or capability `cap` lifts it), and what was found."""
    soft = getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[0]
    capable = bool(_effective_caps(paths) >> _CAPS[cap] & 1)
    found = f"{name} limit {_limit_text(soft)}, {cap} {'yes' if capable else 'no'}"
    return capable or soft == resource.RLIM_INFINITY or soft >= needed, found


def check_realtime_priority(paths: HostPaths, getrlimit: Callable[[int], tuple[int, int]]) -> HostFinding:
    """SCHED_FIFO 99 allowed: an rtprio limit of 99, or CAP_SYS_NICE (root outside a restricted container)."""
    ok, found = _limit_check(paths, getrlimit, "rtprio", NEEDED_RTPRIO, "CAP_SYS_NICE")
    hint = f"add your user to a realtime group with rtprio 99 ({_DOC} §2), or cap_add sys_nice in docker"
    return HostFinding("realtime_priority", "ok" if ok else "fail", found, f"rtprio ≥ {NEEDED_RTPRIO}", hint)


def check_memlock(paths: HostPaths, getrlimit: Callable[[int], tuple[int, int]]) -> HostFinding:
    """Locked memory: page faults in the control loop cost milliseconds."""
    ok, found = _limit_check(paths, getrlimit, "memlock", NEEDED_MEMLOCK_BYTES, "CAP_IPC_LOCK")
    hint = f"memlock 102400 in limits.conf ({_DOC} §2), or ulimit memlock=-1 in docker"
    return HostFinding(
        "memlock", "ok" if ok else "warn", f"{found} (bytes)", f"≥ {NEEDED_MEMLOCK_BYTES} bytes", hint
    )


def check_cpu_governor(paths: HostPaths) -> HostFinding:
    """Every CPU's frequency governor `performance` (others clock down between 1 ms cycles)."""
    cpus = sorted((paths.sys / "devices" / "system" / "cpu").glob("cpu[0-9]*/cpufreq/scaling_governor"))
    governors = {p.parent.parent.name: _read(p) or "?" for p in cpus}
    expected = "performance on every CPU"
    if not governors:
        return HostFinding("cpu_governor", "skip", "no cpufreq in /sys (a VM, or the BIOS sets it)", expected)
    slow = {cpu: g for cpu, g in governors.items() if g != "performance"}
    if not slow:
        return HostFinding("cpu_governor", "ok", f"performance on {len(governors)} CPUs", expected)
    found = ", ".join(f"{cpu}={g}" for cpu, g in sorted(slow.items()))
    hint = "cpupower frequency-set -g performance (and power saving off in the BIOS)"
    return HostFinding("cpu_governor", "warn", found, expected, hint)


@dataclass(frozen=True)
class Route:
    """One row of /proc/net/route."""

    interface: str
    network: ipaddress.IPv4Network
    gateway: str | None


def _address(little_endian_hex: str) -> str:
    return socket.inet_ntoa(struct.pack("<I", int(little_endian_hex, 16)))


def read_routes(paths: HostPaths) -> list[Route]:
    """The IPv4 main routing table (up routes only); addresses are little-endian hex in /proc/net/route."""
    routes = []
    for line in (_read(paths.proc / "net" / "route") or "").splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8 or not int(cols[3], 16) & _RTF_UP:
            continue
        dest, gateway, mask = (_address(c) for c in (cols[1], cols[2], cols[7]))
        has_gateway = bool(int(cols[3], 16) & _RTF_GATEWAY)
        network = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        routes.append(Route(cols[0], network, gateway if has_gateway else None))
    return routes


def route_to(robot_ip: str, routes: list[Route]) -> Route | None:
    """The route the kernel would take to `robot_ip` (longest prefix; loopback is `lo`)."""
    address = ipaddress.IPv4Address(robot_ip)
    if address.is_loopback:
        return Route("lo", ipaddress.IPv4Network("127.0.0.0/8"), None)
    matches = [r for r in routes if address in r.network]
    return max(matches, key=lambda r: r.network.prefixlen, default=None)


def check_fci_route(robot_ip: str, routes: list[Route]) -> tuple[HostFinding, Route | None]:
    """The robot is on a directly connected network of `routes`, not behind a gateway or the default route."""
    expected = "a directly connected network on its own port"
    try:
        ipaddress.IPv4Address(robot_ip)
    except ValueError:
        found = f"robot_ip {robot_ip!r} is not an IPv4 address"
        return HostFinding("fci_route", "fail", found, expected), None
    route = route_to(robot_ip, routes)
    if route is None:
        return HostFinding("fci_route", "fail", f"no route to {robot_ip}", expected, f"{_DOC} §1"), None
    where = f"{robot_ip} via {route.interface} ({route.network})"
    if route.gateway is not None or route.network.prefixlen == 0:
        kind = "the default route" if route.network.prefixlen == 0 else f"route {route.network}"
        found = f"{robot_ip} behind gateway {route.gateway} on {route.interface} ({kind})"
        hint = f"connect the control box to its own port with a static address ({_DOC} §1)"
        return HostFinding("fci_route", "fail", found, expected, hint), route
    return HostFinding("fci_route", "ok", where, expected), route


def check_fci_interface(route: Route, routes: list[Route], paths: HostPaths) -> HostFinding:
    """The port to the robot: up, wired, ≥ 1 Gb/s, and not also the default route (other traffic)."""
    expected = f"a wired link up at ≥ {MIN_LINK_MBPS} Mb/s carrying only the robot"
    name = route.interface
    if name == "lo":
        return HostFinding("fci_interface", "ok", "lo (the robot is simulated on this PC)", expected)
    net = paths.sys / "class" / "net" / name
    state, speed = _read(net / "operstate") or "?", _read(net / "speed")
    if (net / "wireless").exists():
        return HostFinding("fci_interface", "fail", f"{name} is wireless", expected, "use Ethernet")
    if state not in ("up", "unknown"):
        return HostFinding("fci_interface", "fail", f"{name} is {state}", expected, "check the cable")
    mbps = int(speed) if speed and speed.lstrip("-").isdigit() else -1
    shared = any(r.interface == name and r.network.prefixlen == 0 for r in routes)
    found = f"{name} {state}, " + (f"{mbps} Mb/s" if mbps > 0 else "speed unknown")
    if mbps > 0 and mbps < MIN_LINK_MBPS:
        return HostFinding("fci_interface", "warn", found, expected, "a gigabit port and cable")
    if shared:
        hint = "other traffic shares the FCI port: give the robot a port of its own"
        return HostFinding("fci_interface", "warn", f"{found}, also the default route", expected, hint)
    return HostFinding("fci_interface", "ok" if mbps > 0 else "skip", found, expected)


def check_dds(env: Mapping[str, str]) -> HostFinding:
    """Fast DDS for camera frames (LARGE_DATA) and kept off the FCI port (discovery range LOCALHOST)."""
    rmw = env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    scope = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET" if env.get("ROS_LOCALHOST_ONLY") != "1" else "")
    scope = scope or "LOCALHOST"
    transports = env.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT")
    found = f"{rmw}, transports {transports}, discovery {scope}"
    expected = "LARGE_DATA transports, discovery LOCALHOST (all nodes on this PC)"
    if rmw == "rmw_fastrtps_cpp" and transports != "LARGE_DATA":
        hint = "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (source scripts/env.sh): 640×480 frames 15 → 4 ms"
        return HostFinding("dds", "warn", found, expected, hint)
    if scope != "LOCALHOST":
        hint = "DDS then also talks on the FCI port; across PCs keep it to the other NIC"
        return HostFinding("dds", "warn", found, expected, hint)
    return HostFinding("dds", "ok", found, expected)


def check_inference(paths: HostPaths, providers: Callable[[], list[str]]) -> HostFinding:
    """With an NVIDIA GPU present, onnxruntime should offer CUDA (or TensorRT)."""
    gpu = (paths.proc / "driver" / "nvidia" / "version").exists()
    names = providers()
    on_gpu = any(p in names for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    found = f"NVIDIA GPU {'present' if gpu else 'absent'}, onnxruntime {', '.join(names) or 'missing'}"
    if gpu and not on_gpu:
        hint = "pip install onnxruntime-gpu (the CPU build ignores the GPU)"
        return HostFinding("inference", "warn", found, "CUDA or TensorRT provider with a GPU", hint)
    return HostFinding("inference", "ok", found, "CUDA or TensorRT provider with a GPU, else CPU")


def _onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def _for_the_robot(finding: HostFinding) -> HostFinding:
    hint = f"needed on the real robot: {finding.hint}" if finding.hint else "needed on the real robot"
    return HostFinding(finding.name, "warn", finding.found, finding.expected, hint)


def check_host(
    robot_ip: str | None = None,
    *,
    sim: bool = False,
    paths: HostPaths | None = None,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    env: Mapping[str, str] | None = None,
    providers: Callable[[], list[str]] = _onnxruntime_providers,
) -> HostReport:
    """Run every check (the FCI ones when `robot_ip` is given). `sim` turns fails into warnings."""
    paths = paths or HostPaths()
    findings = [
        check_realtime_kernel(paths),
        check_realtime_priority(paths, getrlimit),
        check_memlock(paths, getrlimit),
        check_cpu_governor(paths),
    ]
    if robot_ip is not None:
        routes = read_routes(paths)  # the routing table, read once for both checks
        route_finding, route = check_fci_route(robot_ip, routes)
        findings.append(route_finding)
        if route is not None:
            findings.append(check_fci_interface(route, routes, paths))
    findings += [check_dds(os.environ if env is None else env), check_inference(paths, providers)]
    if sim:  # franky-sim needs none of it: say what the robot will need, fail nothing
        findings = [_for_the_robot(f) if f.status == "fail" else f for f in findings]
    return HostReport(findings)
