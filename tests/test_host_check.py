"""Host checks (`dm1 robot host`): each set-up miss a real FR3 run trips over is named before the arm moves.

The unit tests read a temporary /proc + /sys tree (`HostPaths`); the last tests read this machine's own and
cross-check them against `uname` and `ip route get`.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from dm1.control.backend import FakeBackend
from dm1.control.host_check import HostFinding, HostPaths, HostReport, check_host, read_routes, route_to
from dm1.control.startup import start_robot

CAPS_NONE = 0
CAPS_NICE_AND_LOCK = (1 << 23) | (1 << 14)
GOOD_ENV = {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def _hex(address: str) -> str:
    return f"{struct.unpack('<I', socket.inet_aton(address))[0]:08X}"


def make_host(
    root: Path,
    *,
    kernel: str = "#1 SMP PREEMPT_RT Thu Jan 1",
    caps: int = CAPS_NONE,
    governors: tuple[str, ...] = ("performance", "performance"),
    routes: tuple[tuple[str, str, str, str], ...] = (
        ("eth0", "0.0.0.0", "10.0.0.1", "0.0.0.0"),
        ("eth0", "10.0.0.0", "0.0.0.0", "255.255.255.0"),
        ("enp5s0", "172.16.0.0", "0.0.0.0", "255.255.255.0"),
    ),
    interfaces: dict[str, dict[str, str]] | None = None,
    nvidia: bool = False,
) -> HostPaths:
    """A /proc + /sys tree: `routes` rows are (interface, destination, gateway, mask)."""
    proc, sys_ = root / "proc", root / "sys"
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "sys" / "kernel" / "version").write_text(kernel + "\n")
    (proc / "self").mkdir()
    (proc / "self" / "status").write_text(f"Name:\tpython\nCapEff:\t{caps:016x}\n")
    (proc / "net").mkdir()
    rows = ["Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT"]
    for iface, dest, gateway, mask in routes:
        flags = 0x1 | (0x2 if gateway != "0.0.0.0" else 0)
        rows.append(f"{iface}\t{_hex(dest)}\t{_hex(gateway)}\t{flags:04X}\t0\t0\t0\t{_hex(mask)}\t0\t0\t0")
    (proc / "net" / "route").write_text("\n".join(rows) + "\n")
    for i, governor in enumerate(governors):
        cpufreq = sys_ / "devices" / "system" / "cpu" / f"cpu{i}" / "cpufreq"
        cpufreq.mkdir(parents=True)
        (cpufreq / "scaling_governor").write_text(governor + "\n")
    default_ifaces = {
        "eth0": {"operstate": "up", "speed": "1000"},
        "enp5s0": {"operstate": "up", "speed": "1000"},
    }
    for name, files in (interfaces or default_ifaces).items():
        net = sys_ / "class" / "net" / name
        net.mkdir(parents=True)
        for fname, text in files.items():
            if fname == "wireless":
                (net / "wireless").mkdir()
            else:
                (net / fname).write_text(text + "\n")
    if nvidia:
        (proc / "driver" / "nvidia").mkdir(parents=True)
        (proc / "driver" / "nvidia" / "version").write_text("NVRM version: 550\n")
    return HostPaths(proc=proc, sys=sys_)


def limits(rtprio: int = 99, memlock: int = resource.RLIM_INFINITY):
    table = {resource.RLIMIT_RTPRIO: rtprio, resource.RLIMIT_MEMLOCK: memlock}
    return lambda which: (table[which], table[which])


def run(paths: HostPaths, robot_ip: str | None = "172.16.0.2", **kw):
    kw.setdefault("getrlimit", limits())
    kw.setdefault("env", GOOD_ENV)
    kw.setdefault("providers", lambda: ["CPUExecutionProvider"])
    return check_host(robot_ip, paths=paths, **kw)


def test_a_workstation_set_up_as_documented_passes_every_check(tmp_path: Path) -> None:
    report = run(make_host(tmp_path))
    assert report.passed
    assert {f.name: f.status for f in report.findings} == {
        "realtime_kernel": "ok",
        "realtime_priority": "ok",
        "memlock": "ok",
        "cpu_governor": "ok",
        "fci_route": "ok",
        "fci_interface": "ok",
        "dds": "ok",
        "inference": "ok",
    }
    assert "172.16.0.2 via enp5s0 (172.16.0.0/24)" in report.get("fci_route").found


def test_a_kernel_without_preempt_rt_fails_for_the_robot_and_only_warns_for_the_twin(tmp_path: Path) -> None:
    paths = make_host(tmp_path, kernel="#1 SMP PREEMPT_DYNAMIC Mon")
    robot = run(paths)
    assert not robot.passed
    finding = robot.get("realtime_kernel")
    assert (
        finding.status == "fail" and "no PREEMPT_RT" in finding.found and "PREEMPT_DYNAMIC" in finding.found
    )
    twin = run(paths, sim=True)
    assert twin.passed and twin.get("realtime_kernel").status == "warn"
    assert "needed on the real robot" in twin.get("realtime_kernel").line()


def test_sys_kernel_realtime_marks_a_realtime_kernel_whatever_its_version_string(tmp_path: Path) -> None:
    paths = make_host(tmp_path, kernel="#1 SMP")
    (paths.sys / "kernel").mkdir(parents=True)
    (paths.sys / "kernel" / "realtime").write_text("1\n")
    assert run(paths).get("realtime_kernel").status == "ok"


def test_no_rtprio_and_no_cap_sys_nice_fails_naming_the_limit(tmp_path: Path) -> None:
    report = run(make_host(tmp_path, caps=CAPS_NONE), getrlimit=limits(rtprio=0))
    finding = report.get("realtime_priority")
    assert (
        finding.status == "fail" and "rtprio limit 0" in finding.found and "CAP_SYS_NICE no" in finding.found
    )
    assert "rtprio 99" in finding.hint
    capable = run(make_host(tmp_path / "cap", caps=CAPS_NICE_AND_LOCK), getrlimit=limits(rtprio=0))
    assert capable.get("realtime_priority").status == "ok"


def test_a_small_memlock_limit_warns(tmp_path: Path) -> None:
    report = run(make_host(tmp_path), getrlimit=limits(memlock=8 * 1024 * 1024))
    finding = report.get("memlock")
    assert finding.status == "warn" and "8388608" in finding.found
    assert report.passed  # a warning, not a refusal


def test_a_cpu_not_at_performance_warns_naming_it_and_no_cpufreq_is_skipped(tmp_path: Path) -> None:
    finding = run(make_host(tmp_path, governors=("performance", "powersave"))).get("cpu_governor")
    assert finding.status == "warn" and finding.found == "cpu1=powersave"
    skipped = run(make_host(tmp_path / "vm", governors=())).get("cpu_governor")
    assert skipped.status == "skip" and "no cpufreq" in skipped.found


def test_a_robot_reached_through_the_default_route_fails_naming_the_gateway(tmp_path: Path) -> None:
    report = run(make_host(tmp_path), robot_ip="192.168.1.50")
    finding = report.get("fci_route")
    assert finding.status == "fail" and "behind gateway 10.0.0.1 on eth0 (the default route)" in finding.found
    assert report.get("fci_interface").found.endswith("also the default route")


def test_no_route_or_a_bad_address_fails(tmp_path: Path) -> None:
    paths = make_host(tmp_path, routes=(("enp5s0", "172.16.0.0", "0.0.0.0", "255.255.255.0"),))
    assert run(paths, robot_ip="10.9.9.9").get("fci_route").found == "no route to 10.9.9.9"
    bad = run(paths, robot_ip="franka.local").get("fci_route")
    assert bad.status == "fail" and "'franka.local' is not an IPv4 address" in bad.found


@pytest.mark.parametrize(
    ("files", "status", "found"),
    [
        ({"operstate": "up", "wireless": ""}, "fail", "enp5s0 is wireless"),
        ({"operstate": "down", "speed": "-1"}, "fail", "enp5s0 is down"),
        ({"operstate": "up", "speed": "100"}, "warn", "enp5s0 up, 100 Mb/s"),
        ({"operstate": "up", "speed": "2500"}, "ok", "enp5s0 up, 2500 Mb/s"),
    ],
)
def test_the_port_to_the_robot_must_be_wired_up_and_fast(
    tmp_path: Path, files: dict[str, str], status: str, found: str
) -> None:
    paths = make_host(tmp_path, interfaces={"eth0": {"operstate": "up"}, "enp5s0": files})
    finding = run(paths).get("fci_interface")
    assert (finding.status, finding.found) == (status, found)


def test_a_robot_on_the_same_port_as_the_default_route_warns(tmp_path: Path) -> None:
    report = run(make_host(tmp_path), robot_ip="10.0.0.7")
    assert report.get("fci_route").status == "ok"
    shared = report.get("fci_interface")
    assert shared.status == "warn" and "other traffic shares the FCI port" in shared.hint


def test_dds_without_large_data_or_open_to_the_subnet_warns(tmp_path: Path) -> None:
    paths = make_host(tmp_path)
    slow = run(paths, env={"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}).get("dds")
    assert slow.status == "warn" and "transports DEFAULT" in slow.found and "LARGE_DATA" in slow.hint
    subnet = run(paths, env={"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}).get("dds")
    assert subnet.status == "warn" and "discovery SUBNET" in subnet.found
    localhost_only = run(paths, env={"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_LOCALHOST_ONLY": "1"})
    assert localhost_only.get("dds").status == "ok"


def test_a_gpu_without_a_cuda_onnxruntime_warns(tmp_path: Path) -> None:
    paths = make_host(tmp_path, nvidia=True)
    cpu_only = run(paths).get("inference")
    assert cpu_only.status == "warn" and "onnxruntime-gpu" in cpu_only.hint
    cuda = run(paths, providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]).get("inference")
    assert cuda.status == "ok"


def test_without_a_robot_ip_the_fci_checks_are_left_out(tmp_path: Path) -> None:
    names = [f.name for f in run(make_host(tmp_path), robot_ip=None).findings]
    assert "fci_route" not in names and "fci_interface" not in names and "realtime_kernel" in names


def test_this_machines_kernel_and_limits_are_read_as_they_are() -> None:
    report = check_host(None)
    flag = Path("/sys/kernel/realtime")
    realtime = "PREEMPT_RT" in os.uname().version or (flag.exists() and flag.read_text().strip() == "1")
    assert (report.get("realtime_kernel").status == "ok") == realtime
    soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    assert (
        f"rtprio limit {'unlimited' if soft == resource.RLIM_INFINITY else soft}"
        in report.get("realtime_priority").found
    )


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2's ip command is not installed")
def test_routes_read_from_proc_agree_with_ip_route_get() -> None:
    routes = read_routes(HostPaths())
    for address in ("127.0.0.1", "8.8.8.8", *{str(r.network.network_address + 1) for r in routes}):
        out = subprocess.run(
            ["ip", "-j", "route", "get", address], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            continue  # unreachable here: ip and the table agree there is no route
        kernel = json.loads(out.stdout)[0]
        route = route_to(address, routes)
        assert route is not None and route.interface == kernel["dev"], address
        assert route.gateway == kernel.get("gateway"), address


def test_dm1_robot_host_prints_json_and_exits_1_exactly_when_a_check_failed() -> None:
    cmd = [sys.executable, "-m", "dm1.cli", "robot", "host", "--robot-ip", "127.0.0.1", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    report = json.loads(out.stdout)["host"]
    assert out.returncode == (0 if report["passed"] else 1), out.stderr
    assert report["passed"] == all(f["status"] != "fail" for f in report["findings"])
    assert {"realtime_kernel", "fci_route", "fci_interface"} <= {f["name"] for f in report["findings"]}
    sim = subprocess.run([*cmd, "--sim"], capture_output=True, text=True, timeout=120, check=False)
    assert sim.returncode == 0 and json.loads(sim.stdout)["host"]["passed"]


def _controller_values(**overrides):
    from dm1.control.parameters import CONTROLLER_PARAMETERS

    values = {name: spec[0] for name, spec in CONTROLLER_PARAMETERS.items()}
    return values | {"robot_ip": "172.16.0.2", "comm_check_s": 0.0} | overrides


def _failing_host(_robot_ip: str) -> HostReport:
    return HostReport(
        [HostFinding("realtime_kernel", "fail", "no PREEMPT_RT", "a PREEMPT_RT kernel", "hint")]
    )


def test_the_controller_start_names_host_problems_before_connecting_to_a_real_arm() -> None:
    events: list[tuple[str, object]] = []

    def connect(host: str, rdf: float, mode: str, realtime: bool) -> FakeBackend:
        events.append(("connect", (host, mode, realtime)))
        return FakeBackend()

    backend, link = start_robot(
        _controller_values(), False, lambda m: events.append(("warn", m)), connect, _failing_host
    )
    assert isinstance(backend, FakeBackend) and link is None
    assert events[0] == (
        "warn",
        "host check: [fail] realtime_kernel: no PREEMPT_RT (expected a PREEMPT_RT kernel); hint",
    )
    realtime = True  # a real arm: libfranka's real-time mode enforced
    assert events[1] == ("connect", ("172.16.0.2", "cartesian", realtime))


def test_the_twin_start_skips_the_host_checks_and_runs_the_link_check() -> None:
    checked: list[str] = []

    def host_check(robot_ip: str) -> HostReport:
        checked.append(robot_ip)
        return _failing_host(robot_ip)

    fake = FakeBackend()
    backend, link = start_robot(
        _controller_values(comm_check_s=0.5), True, pytest.fail, lambda *a: fake, host_check
    )
    assert backend is fake and checked == [] and link is not None and "passed" in link


def test_a_bad_parameter_or_a_lossy_link_refuses_the_start() -> None:
    connected: list[FakeBackend] = []

    def connect(*_args) -> FakeBackend:
        connected.append(FakeBackend())
        connected[-1].command_success_rate = 0.5
        return connected[-1]

    with pytest.raises(
        ValueError, match=re.escape("parameter mode: expected cartesian | joint, found 'torque'")
    ):
        start_robot(_controller_values(mode="torque"), True, print, connect)
    assert connected == []  # refused before connecting
    with pytest.raises(RuntimeError, match=re.escape("command success rate fell to 0.500")):
        start_robot(_controller_values(comm_check_s=0.5), True, print, connect)
    assert connected[-1].calls[-1][0] == "close"
