"""Unit tests of the teleop core with a fake clock: deadman, episode session, devices."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import FakeClock
from dm1.teleop.deadman import Deadman, DeadmanConfig
from dm1.teleop.device_interface import DeviceCommand, DeviceContext, DeviceUnavailableError
from dm1.teleop.devices import (
    GamepadDevice,
    KeyboardDevice,
    ScriptedExpertDevice,
    SpaceMouseDevice,
    make_device,
)
from dm1.teleop.session import EpisodeSession, SessionError, SessionState


# ---- deadman ----------------------------------------------------------------------------------------------
def test_deadman_is_dead_before_any_input():
    assert not Deadman().alive(0.0)


def test_deadman_alive_while_input_fresh_and_trips_after_timeout():
    clock, dm = FakeClock(), Deadman(DeadmanConfig(timeout_s=0.1))
    dm.feed(clock.t)
    assert dm.alive(clock.advance(0.05))
    assert dm.alive(clock.advance(0.05))  # exactly at the timeout
    assert not dm.alive(clock.advance(0.001))
    assert dm.trips == 1
    dm.feed(clock.t)
    assert dm.alive(clock.t)


def test_deadman_with_enable_required_holds_when_button_released():
    clock, dm = FakeClock(), Deadman(DeadmanConfig(timeout_s=0.1, require_enable=True))
    dm.feed(clock.t, enable=False)
    assert not dm.alive(clock.t)
    dm.feed(clock.advance(0.02), enable=True)
    assert dm.alive(clock.t)


def test_deadman_ignores_out_of_order_input():
    clock, dm = FakeClock(), Deadman()
    dm.feed(clock.t)
    dm.feed(clock.t - 1.0)  # stale sample arriving late must not refresh nor rewind
    assert dm.age(clock.advance(0.05)) == pytest.approx(0.05)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), 10.0])
def test_deadman_config_rejects_bad_timeout(bad):
    with pytest.raises(ValueError, match="timeout_s"):
        DeadmanConfig(timeout_s=bad)


# ---- session ----------------------------------------------------------------------------------------------
def test_session_start_mark_save_advances_index():
    saved = []
    s = EpisodeSession(on_save=lambda i, ok: saved.append((i, ok)), next_index=3)
    assert s.start(0.0) == 3 and s.state is SessionState.RECORDING
    s.mark(True)
    out = s.stop_save(1.0)
    assert saved == [(3, True)] and out.saved and out.success and s.next_index == 4
    assert s.state is SessionState.IDLE


def test_session_unmarked_episode_saves_as_failure():
    saved = []
    s = EpisodeSession(on_save=lambda i, ok: saved.append(ok))
    s.start(0.0)
    s.stop_save(1.0)
    assert saved == [False]


def test_session_discard_keeps_index_and_calls_discard():
    discarded = []
    s = EpisodeSession(on_discard=discarded.append)
    s.start(0.0)
    s.discard(0.5)
    assert discarded == [0] and s.next_index == 0 and not s.history[-1].saved


@pytest.mark.parametrize("event", ["stop_save", "discard", "mark"])
def test_session_rejects_events_when_idle(event):
    s = EpisodeSession()
    with pytest.raises(SessionError, match="session is idle"):
        s.mark(True) if event == "mark" else getattr(s, event)(0.0)


def test_session_rejects_double_start():
    s = EpisodeSession()
    s.start(0.0)
    with pytest.raises(SessionError, match="cannot start: session is recording"):
        s.start(1.0)


def test_session_start_failure_leaves_session_idle():
    def fail(i: int, now: float) -> None:
        raise OSError("disk full")

    s = EpisodeSession(on_start=fail)
    with pytest.raises(OSError):
        s.start(0.0)
    assert s.state is SessionState.IDLE


def test_session_save_failure_still_ends_episode():
    def fail(i: int, ok: bool) -> None:
        raise RuntimeError("rename failed")

    s = EpisodeSession(on_save=fail)
    s.start(0.0)
    with pytest.raises(RuntimeError):
        s.stop_save(1.0)
    assert s.state is SessionState.IDLE


# ---- devices ----------------------------------------------------------------------------------------------
def test_device_command_rejects_bad_values():
    with pytest.raises(ValueError, match="gripper"):
        DeviceCommand(0.0, gripper=1.5)
    with pytest.raises(ValueError, match="xyz"):
        DeviceCommand(0.0, xyz=[np.nan, 0, 0])
    with pytest.raises(ValueError, match="events"):
        DeviceCommand(0.0, events=("explode",))


def test_keyboard_keys_map_to_deltas_gripper_and_events():
    kb = KeyboardDevice(step=0.01)
    cmd = kb.command_from_keys("wwar n", stamp=5.0)
    assert cmd.stamp == 5.0 and cmd.mode == "delta"
    np.testing.assert_allclose(cmd.xyz, [0.02, 0.01, 0.01])
    assert cmd.gripper == 1.0 and cmd.events == ("start",)
    assert kb.command_from_keys("", 5.05).gripper == 1.0  # gripper state persists
    assert kb.command_from_keys("ym", 5.1).events == ("mark_success", "stop_save")


def test_keyboard_without_terminal_is_unavailable(tmp_path):
    with open(tmp_path / "plain", "w+") as f, pytest.raises(DeviceUnavailableError, match="not a terminal"):
        KeyboardDevice(stream=f).open()


def test_keyboard_reads_from_a_real_pseudo_terminal():
    master, slave = os.openpty()
    with os.fdopen(slave, "r") as stream:
        kb = KeyboardDevice(step=0.01, stream=stream)
        kb.open()
        try:
            os.write(master, b"dd")
            cmd = kb.read(DeviceContext(now=1.0, dt=0.05))
            assert cmd is not None
            np.testing.assert_allclose(cmd.xyz, [0.0, -0.02, 0.0])
        finally:
            kb.close()
            os.close(master)


@pytest.mark.parametrize("module,cls", [("pyspacemouse", SpaceMouseDevice), ("pygame", GamepadDevice)])
def test_missing_device_library_gives_clear_message(monkeypatch, module, cls):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if the package were absent
    with pytest.raises(DeviceUnavailableError, match=f"'{module}' is not installed"):
        cls().open()


def test_unknown_device_name_lists_choices():
    with pytest.raises(ValueError, match="expected one of"):
        make_device("joystick9000")


class _Expert:
    def __init__(self) -> None:
        self.calls = []

    def act(self, ee, width, cube, t):
        self.calls.append(t)
        return np.array([*cube[:2], ee[2] - 0.01, 0.0], np.float32)


def test_scripted_device_needs_observations_then_gives_absolute_targets():
    dev = ScriptedExpertDevice(expert_factory=_Expert)
    dev.open()
    assert dev.read(DeviceContext(now=1.0, dt=0.05)) is None  # no observation yet → deadman holds
    ctx = DeviceContext(
        1.0,
        0.05,
        ee_pos=np.array([0.5, 0, 0.3]),
        gripper_width=0.08,
        cube_pos=np.array([0.55, 0.1, 0.025]),
        episode_time=0.2,
    )
    cmd = dev.read(ctx)
    assert cmd is not None and cmd.mode == "absolute" and cmd.gripper == 0.0
    np.testing.assert_allclose(cmd.xyz, [0.55, 0.1, 0.29], atol=1e-6)


def test_scripted_device_uses_the_twin_expert_by_default():
    dev = make_device("scripted")
    dev.open()
    ctx = DeviceContext(
        0.0, 0.05, ee_pos=np.array([0.55, 0, 0.4]), gripper_width=0.08, cube_pos=np.array([0.55, 0.0, 0.025])
    )
    cmd = dev.read(ctx)
    assert cmd is not None and cmd.mode == "absolute"
    assert np.linalg.norm(cmd.xyz - ctx.ee_pos) <= 0.05  # bounded step towards the cube


# ---- the teleop loop (device + deadman + target + session) ----------------------------------------------
class _ScriptedInput:
    """A device whose output the test sets per tick (None = silent)."""

    name = "test"

    def __init__(self) -> None:
        self.next = None
        self.opened = 0

    def open(self) -> None:
        self.opened += 1

    def read(self, ctx):
        return self.next

    def close(self) -> None:
        pass


def _loop(recorder=None):
    from dm1.teleop.loop import TeleopConfig, TeleopLoop

    dev = _ScriptedInput()
    loop = TeleopLoop(TeleopConfig(max_speed=0.2), dev, recorder)
    assert loop.open_device(0.0) == "teleop device 'test' ready"
    return loop, dev


EE = np.array([0.5, 0.0, 0.3])


def test_loop_first_target_equals_measured_pose_and_moves_with_device():
    loop, dev = _loop()
    clock = FakeClock()
    dev.next = DeviceCommand(clock.t, "delta", [0.0, 0.005, 0.0], gripper=1.0)
    out = loop.step(DeviceContext(clock.t, 0.05, ee_pos=EE))
    np.testing.assert_allclose(out.action, [0.5, 0.005, 0.3, 1.0], atol=1e-6)


def test_loop_clamps_target_speed():
    loop, dev = _loop()
    dev.next = DeviceCommand(100.0, "absolute", [0.7, 0.0, 0.3])
    out = loop.step(DeviceContext(100.0, 0.05, ee_pos=EE))
    assert out.action[0] == pytest.approx(0.5 + 0.2 / 20.0)  # max_speed / rate


def test_loop_deadman_stops_publishing_and_resumes_without_jump():
    loop, dev = _loop()
    clock = FakeClock()
    for _ in range(3):
        dev.next = DeviceCommand(clock.t, "delta", [0.01, 0.0, 0.0])
        held = loop.step(DeviceContext(clock.t, 0.05, ee_pos=EE)).action
        clock.advance(0.05)
    dev.next = None  # device unplugged
    clock.advance(0.1)
    stopped = EE + np.array([0.01, 0.0, 0.0])  # the held arm stopped short of the target (tracking lag)
    out = loop.step(DeviceContext(clock.t, 0.05, ee_pos=stopped))
    assert out.action is None and not out.alive
    dev.next = DeviceCommand(clock.t, "delta", [0.0, 0.0, 0.0])
    back = loop.step(DeviceContext(clock.t, 0.05, ee_pos=stopped))
    np.testing.assert_allclose(back.action, held)  # the frozen target, not a jump


def test_loop_stale_device_stamp_counts_as_silence():
    loop, dev = _loop()
    dev.next = DeviceCommand(100.0, "delta", [0.01, 0, 0])
    loop.step(DeviceContext(100.0, 0.05, ee_pos=EE))
    out = loop.step(DeviceContext(100.25, 0.05, ee_pos=EE))  # same old sample repeated by the device
    assert out.action is None and loop.deadman.trips == 1


def test_loop_recorder_failure_holds_the_target_and_keeps_publishing(tmp_path):
    from dm1.teleop.recorder import EpisodeRecorder, RecorderConfig

    (tmp_path / "file").write_text("x")
    loop, dev = _loop(EpisodeRecorder(RecorderConfig(out_dir=tmp_path / "file" / "ds", min_free_mb=0)))
    dev.next = DeviceCommand(100.0, "delta", [0.01, 0, 0], events=("start",))
    out = loop.step(DeviceContext(100.0, 0.05, ee_pos=EE))
    assert any("cannot create output directory" in m for m in out.messages)
    assert loop.hold and not loop.session.recording
    dev.next = DeviceCommand(100.05, "delta", [0.05, 0, 0])
    out2 = loop.step(DeviceContext(100.05, 0.05, ee_pos=EE))
    np.testing.assert_allclose(out2.action, out.action)  # device ignored while holding
    dev.next = None
    out3 = loop.step(DeviceContext(101.0, 0.05, ee_pos=EE))
    assert out3.action is not None  # still publishing the held target


def test_loop_absent_device_retries_every_five_seconds(monkeypatch):
    from dm1.teleop.loop import TeleopConfig, TeleopLoop

    monkeypatch.setitem(sys.modules, "pyspacemouse", None)  # the library is not installed here
    loop = TeleopLoop(TeleopConfig(), SpaceMouseDevice(), None)
    msg = loop.open_device(10.0)
    assert msg.startswith("error: SpaceMouse") and "retrying in 5 s" in msg
    assert loop.open_device(12.0) is None and not loop.device_open
    assert loop.open_device(15.5) is not None


def test_loop_controller_fault_discards_the_episode_and_holds_where_the_arm_stopped(tmp_path):
    from dm1.teleop.recorder import EpisodeRecorder, RecorderConfig
    from dm1.teleop.session import SessionError

    out = tmp_path / "ds"
    loop, dev = _loop(EpisodeRecorder(RecorderConfig(out_dir=out, min_free_mb=0)))
    dev.next = DeviceCommand(100.0, "delta", [0.01, 0, 0], events=("start",))
    loop.step(DeviceContext(100.0, 0.05, ee_pos=EE))
    assert loop.session.recording and loop.on_controller(None, 100.02) is None  # a healthy report
    line = loop.on_controller("ControlException: reflex", 100.05)
    assert line.startswith("controller fault: ControlException: reflex; holding")
    assert "episode 0 discarded" in line
    assert not loop.session.recording and list(out.glob("episode_*")) == []
    assert loop.on_controller("ControlException: reflex", 100.1) is None  # the same fault again: once
    dev.next = DeviceCommand(100.15, "delta", [0.05, 0, 0])
    assert loop.step(DeviceContext(100.15, 0.05, ee_pos=EE)).action is None  # nothing while faulted
    with pytest.raises(SessionError, match="start refused: controller fault latched"):
        loop.event("start", 100.2)
    loop.on_controller(None, 100.3)  # the operator recovered the controller
    stopped = EE + np.array([0.02, 0.0, 0.0])  # where the arm stands now
    dev.next = DeviceCommand(100.35, "delta", [0.05, 0, 0])
    out1 = loop.step(DeviceContext(100.35, 0.05, ee_pos=stopped))
    np.testing.assert_allclose(out1.action[:3], stopped)  # re-seeded there, the device ignored
    assert loop.event("start", 100.4) == "recording episode 0" and not loop.hold


def test_loop_target_follows_an_arm_something_else_moved_until_the_device_moves_again():
    loop, dev = _loop()
    for k in range(5):
        dev.next = DeviceCommand(100.0 + 0.05 * k, "delta", [0.01, 0, 0])
        out = loop.step(DeviceContext(100.0 + 0.05 * k, 0.05, ee_pos=EE))
    assert out.action[0] == pytest.approx(EE[0] + 0.05) and not out.messages  # 5 cm: a tracking lag
    t, messages = 100.25, []
    for y in (0.0, -0.03, -0.06, -0.08):  # a home move takes the arm away; the device at rest
        dev.next = DeviceCommand(t, "delta", [0.0, 0.0, 0.0])
        ee = np.array([0.55, y, 0.5])
        out = loop.step(DeviceContext(t, 0.05, ee_pos=ee))
        messages += out.messages
        t += 0.05
    np.testing.assert_allclose(out.action[:3], ee)  # where the arm ended, not the old target
    assert messages == ["the arm was moved away from the teleop target: following it"]
    dev.next = DeviceCommand(t, "delta", [0.0, 0.01, 0.0])  # the operator moves the device again
    out = loop.step(DeviceContext(t, 0.05, ee_pos=ee))
    np.testing.assert_allclose(out.action[:3], ee + [0.0, 0.01, 0.0])
    dev.next = DeviceCommand(t + 0.05, "delta", [0.0, 0.01, 0.0])
    out = loop.step(DeviceContext(t + 0.05, 0.05, ee_pos=ee))  # the target leads the arm again
    np.testing.assert_allclose(out.action[:3], ee + [0.0, 0.02, 0.0])


def _recording_loop(out, proprio_keys=("ee_pos", "ee_quat_xyzw", "gripper_width", "joint_pos")):
    """A loop with a real recorder into `out` whose inputs (frames, joints) are fed at every `_tick`."""
    from dm1.teleop.recorder import EpisodeRecorder, RecorderConfig

    rec = EpisodeRecorder(RecorderConfig(out_dir=out, proprio_keys=proprio_keys, min_free_mb=0))
    return (*_loop(rec), rec)


def _tick(loop, dev, rec, t, events=()):
    q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    for cam in rec.config.camera_names:
        rec.on_image(cam, np.zeros((24, 32, 3), np.uint8), t, t)
    rec.on_joint_state(q, 0.08, t, t)
    dev.next = DeviceCommand(t, "delta", [0.0, 0.0, 0.0], events=tuple(events))
    return loop.step(DeviceContext(t, 0.05, ee_pos=EE))


def test_a_refused_second_start_keeps_the_episode_number_and_the_saved_message_names_the_file(tmp_path):
    out = tmp_path / "ds"
    loop, dev, rec = _recording_loop(out)
    messages = []
    for k, events in enumerate([("start",), ("start",), (), (), ("mark_success", "stop_save"), ("start",)]):
        messages += _tick(loop, dev, rec, 100.0 + 0.05 * k, events).messages
    assert messages == [
        "recording episode 0",
        "error: cannot start: session is recording, expected idle",
        "episode marked success",
        "saved episode 0 (success=True)",  # `dm1 data collect --via-teleop` reads the file name from it
        "recording episode 1",
    ]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".recording.lock",
        "episode_000000.h5",
        "episode_000001.h5.partial",
    ]  # lock: one recorder


def test_loop_start_into_a_dataset_of_another_layout_is_refused_and_holds(tmp_path):
    from dm1.teleop.recorder import RecorderError

    out = tmp_path / "ds"
    lift, lift_dev, lift_rec = _recording_loop(out, proprio_keys=("ee_pos", "gripper_width"))
    for k, events in enumerate([("start",), (), ("stop_save",)]):  # a --via-teleop episode
        _tick(lift, lift_dev, lift_rec, 100.0 + 0.05 * k, events)
    loop, dev, rec = _recording_loop(out)  # the node's default proprio keys
    with pytest.raises(RecorderError, match=r"holds a different dataset \(episode_000000.h5: proprio_keys"):
        loop.event("start", 100.0)  # a service call: the node answers success=false with the message
    out1 = _tick(loop, dev, rec, 100.05, ["start"])  # a device key: the same refusal, the loop holds
    assert out1.messages[0].startswith("error: ") and "holds a different dataset" in out1.messages[0]
    assert loop.status(100.05)["next_index"] == 0  # a refused start changes nothing
    assert not loop.session.recording and loop.hold
    np.testing.assert_allclose(out1.action[:3], EE)  # holding where the arm is
    assert sorted(p.name for p in out.iterdir()) == ["episode_000000.h5"]
    fresh = _recording_loop(out)[0]
    line = fresh.check_dataset()  # the node's startup check: logged at once, the loop holds
    assert line.startswith("error: ") and "holds a different dataset (episode_000000.h5: proprio_keys" in line
    assert line.endswith("start is refused while it does") and fresh.hold


def test_loop_check_dataset_passes_for_an_empty_directory_or_without_a_recorder(tmp_path):
    loop, _dev, _rec = _recording_loop(tmp_path / "ds")
    assert loop.check_dataset() is None and not loop.hold
    assert _loop()[0].check_dataset() is None
