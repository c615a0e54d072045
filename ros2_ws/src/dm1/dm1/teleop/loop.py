"""One teleop control tick, ROS-free: device → deadman → held end-effector target → recorder.

`TeleopLoop.step(ctx)` is called by the teleop node at the control rate with the node clock (sim time on the
twin) and the latest measurements. It returns the `ee_position` action `[x, y, z, gripper]` to publish, or
None when nothing may be published (no fresh device input within the deadman timeout, or no measurement yet):
the controller's watchdog then holds the arm, and the loop keeps its own target frozen so motion resumes
without a jump. Each `start` re-seeds the target from the measured pose, so an episode begins where the arm
is (e.g. after `/dm1/controller/home`), not at the previous episode's last target. Recording errors (existing
file, disk full) end the episode and put the loop in hold (target frozen, device ignored) until the next
successful `start`; the tick never raises for them. So does a fault the controller reports (`on_controller`):
the open episode is discarded (the arm stopped while its actions went on being recorded), nothing is
published while the fault is latched, and after the operator's recovery the target is re-seeded where the
arm stands and held there until the next `start` (refused while the fault is latched). A dataset directory
that holds episodes of another layout (`EpisodeRecorder.check_dataset`, checked at startup by
`check_dataset` and again at every `start`) refuses `start` the same way: error, hold. A refused `start`
changes nothing: the next episode keeps its number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dm1.control.limits import SafetyLimits
from dm1.teleop.deadman import Deadman, DeadmanConfig
from dm1.teleop.device_interface import DeviceContext, DeviceUnavailableError, TeleopDevice
from dm1.teleop.mcap_mirror import McapMirror
from dm1.teleop.recorder import EpisodeRecorder, RecorderError
from dm1.teleop.session import EpisodeSession, SessionError

_LIMITS = SafetyLimits()


@dataclass
class TeleopConfig:
    """Teleop loop settings.

    Args:
        control_rate_hz: tick rate (Hz).
        deadman_timeout_s: no device input for longer than this → stop publishing.
        require_enable: also require the device's enable button.
        max_speed: largest target speed (m/s); each tick moves the target at most max_speed / rate.
        workspace_min / workspace_max: box (m, fr3_link0) the target is clipped to (the controller's
            safety filter clips again).
        reseed_distance: a measured EE further than this (m) from the target means something else moved the
            arm (a home move, a hand, a contact): the target then follows the arm until the operator moves
            the device again. Kept, the old target pulled a homed arm straight back to it (10 cm at full
            speed, on the twin).
    """

    control_rate_hz: float = 20.0
    deadman_timeout_s: float = 0.1
    require_enable: bool = False
    max_speed: float = 0.3
    workspace_min: tuple[float, float, float] = _LIMITS.workspace_min
    workspace_max: tuple[float, float, float] = _LIMITS.workspace_max
    reseed_distance: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.control_rate_hz <= 1000:
            raise ValueError(
                f"TeleopConfig.control_rate_hz: expected (0, 1000], found {self.control_rate_hz!r}"
            )
        if not 0 < self.reseed_distance <= 1.0:
            raise ValueError(
                f"TeleopConfig.reseed_distance: expected (0, 1] m, found {self.reseed_distance!r}"
            )
        if not 0 < self.max_speed <= 1.0:
            raise ValueError(f"TeleopConfig.max_speed: expected (0, 1] m/s, found {self.max_speed!r}")
        if not np.all(np.asarray(self.workspace_min) < np.asarray(self.workspace_max)):
            raise ValueError(
                f"TeleopConfig.workspace: expected min < max, "
                f"found {self.workspace_min} / {self.workspace_max}"
            )
        DeadmanConfig(self.deadman_timeout_s, self.require_enable)  # validates the timeout


@dataclass
class TickResult:
    """What one tick decided: the action to publish (or None) and any messages for the log."""

    action: np.ndarray | None
    alive: bool
    messages: list[str] = field(default_factory=list)


class TeleopLoop:
    """Device + deadman + target + episode session + recorder (see module docstring)."""

    def __init__(
        self,
        config: TeleopConfig,
        device: TeleopDevice,
        recorder: EpisodeRecorder | None,
        mirror: McapMirror | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.recorder = recorder
        self.mirror = mirror  # optional MCAP mirror, one file per episode beside the HDF5 files
        self.deadman = Deadman(DeadmanConfig(config.deadman_timeout_s, config.require_enable))
        self.session = EpisodeSession(
            on_start=self._start_recording,
            on_save=self._save,
            on_discard=self._discard,
        )
        self.target: np.ndarray | None = None  # (3,) m
        self.gripper = 0.0
        self.hold = False  # recorder failure: ignore the device until the next start
        self.episode_t0 = 0.0
        self.last_error = ""
        self.device_open, self._next_open = False, 0.0
        self.controller_fault: str | None = None  # the controller's latched fault, from its status
        self._away = False  # something else moved the arm: the target follows it until the device moves

    def on_controller(self, fault: str | None, now: float) -> str | None:
        """The controller's latest report (`fault`: its latched fault, None: none). A new fault discards the
        open episode and holds the loop (see the module docstring); returns a log line when it acted."""
        new, cleared = fault is not None and self.controller_fault is None, fault is None
        if cleared and self.controller_fault is not None:
            self.target = None  # recovered: re-seed from where the arm stands now
        self.controller_fault = fault
        if not new:
            return None
        message = f"controller fault: {fault}; holding until the next start"
        if self.session.recording:
            index = self.session.next_index
            try:
                self.session.discard(now)
                message += f"; episode {index} discarded (the arm stopped, its actions were still recorded)"
            except RecorderError as exc:  # the session is idle either way
                message += f"; episode {index} could not be discarded: {exc}"
        self.hold, self.target, self.last_error = True, None, f"controller fault: {fault}"
        return message

    def check_dataset(self) -> str | None:
        """Startup check of the recorder's output directory: None when episodes may be appended there; else
        the error line (the loop then holds; `start` is refused with the same message while it lasts)."""
        if self.recorder is None:
            return None
        try:
            self.recorder.check_dataset()
        except RecorderError as exc:
            self.hold, self.last_error = True, str(exc)
            return f"error: {exc}; start is refused while it does"
        return None

    def open_device(self, wall_now: float) -> str | None:
        """Open the device if needed (retrying every 5 s of wall time); returns a log line when it tried."""
        if self.device_open or wall_now < self._next_open:
            return None
        try:
            self.device.open()
        except DeviceUnavailableError as exc:
            self._next_open = wall_now + 5.0
            return f"error: {exc}; holding, retrying in 5 s"
        self.device_open = True
        return f"teleop device '{self.device.name}' ready"

    def shutdown(self) -> None:
        """Process exit: an open episode stays `.partial` (quarantined by `dm1 data validate`)."""
        if self.recorder is not None:
            self.recorder.abandon()
        if self.mirror is not None:
            self.mirror.abandon()
        if self.device_open:
            self.device.close()
            self.device_open = False

    def _start_recording(self, index: int, now: float) -> None:
        if self.recorder is not None:
            self.recorder.start(index, now)
        if self.mirror is not None:
            try:
                self.mirror.open(f"episode_{index:06d}")
            except OSError as exc:
                if self.recorder is not None:
                    self.recorder.discard()
                raise RecorderError(f"MCAP mirror: {exc}") from exc

    def _save(self, index: int, success: bool) -> None:
        if self.mirror is not None:
            self.mirror.close()
        if self.recorder is not None:
            self.recorder.stop_save(success)

    def _discard(self, index: int) -> None:
        if self.mirror is not None:
            self.mirror.discard()
        if self.recorder is not None:
            self.recorder.discard()

    def event(self, name: str, now: float) -> str:
        """Apply an episode-control event (`start`, `stop_save`, `discard`, `mark_success`, `mark_failure`).

        Returns a message; raises `SessionError` / `RecorderError` with the reason when it cannot be applied.
        """
        if name == "start":
            if self.controller_fault is not None:
                raise SessionError(
                    f"start refused: controller fault latched ({self.controller_fault}); recover it first"
                )
            before = self.session.next_index
            if self.recorder is not None and not self.session.recording:  # (the open .partial counts)
                from dm1.data.index import next_episode_path

                stem = next_episode_path(self.recorder.config.out_dir).stem
                self.session.next_index = max(before, int(stem.split("_")[1]))
            try:
                index = self.session.start(now)
            except Exception:
                self.session.next_index = before  # a refused start changes nothing
                raise
            self.hold, self.last_error, self.episode_t0 = False, "", now
            self.target = None  # re-seeded from the measured pose (the arm may have been homed since)
            reset = getattr(self.device, "reset", None)
            if reset is not None:
                reset()
            return f"recording episode {index}"
        if name in ("mark_success", "mark_failure"):
            self.session.mark(name == "mark_success")
            return f"episode marked {name.removeprefix('mark_')}"
        if name == "stop_save":
            out = self.session.stop_save(now)
            return f"saved episode {out.index} (success={out.success})"
        if name == "discard":
            out = self.session.discard(now)
            return f"discarded episode {out.index}"
        raise SessionError(f"unknown event {name!r}")

    def step(self, ctx: DeviceContext) -> TickResult:
        """One control tick at `ctx.now` (see module docstring)."""
        now, result = ctx.now, TickResult(None, False)
        ctx.recording = self.session.recording
        if self.session.recording:
            ctx.episode_time = now - self.episode_t0
        cmd = self.device.read(ctx)
        if cmd is not None:
            self.deadman.feed(cmd.stamp, cmd.enable)
            for name in cmd.events:
                try:
                    result.messages.append(self.event(name, now))
                except (SessionError, RecorderError) as exc:
                    result.messages.append(self.fail(exc, now))
        if self.controller_fault is not None:
            return result  # the controller refuses every chunk until an operator recovers it
        if self.target is None:
            if ctx.ee_pos is None:
                return result  # first command must equal the measured state: wait for it
            self.target = np.asarray(ctx.ee_pos, dtype=float).copy()
        if ctx.ee_pos is not None:
            gap = float(np.linalg.norm(ctx.ee_pos - self.target))
            if gap > self.config.reseed_distance and not self._away:  # a home move, a hand, a contact
                result.messages.append("the arm was moved away from the teleop target: following it")
                self._away = True
            if self._away:  # the target follows the arm until the operator moves the device again
                self.target = np.asarray(ctx.ee_pos, dtype=float).copy()
                self._away = not (cmd is not None and (cmd.mode == "absolute" or np.any(cmd.xyz != 0)))
        result.alive = self.deadman.alive(now)
        if result.alive and cmd is not None and not self.hold:
            goal = self.target + cmd.xyz if cmd.mode == "delta" else cmd.xyz
            step = goal - self.target
            max_step = self.config.max_speed / self.config.control_rate_hz
            norm = float(np.linalg.norm(step))
            if norm > max_step:
                step *= max_step / norm
            self.target = np.clip(self.target + step, self.config.workspace_min, self.config.workspace_max)
            if cmd.gripper is not None:
                self.gripper = float(cmd.gripper)
        action = np.array([*self.target, self.gripper], dtype=np.float32)
        if not (result.alive or self.hold):
            return result  # deadman: publish nothing, record nothing (QA shows the gap)
        result.action = action
        if self.recorder is not None and self.session.recording:
            try:
                self.recorder.tick(now, action, perturbed=cmd is not None and cmd.perturbed)
            except RecorderError as exc:
                result.messages.append(self.fail(exc, now))
        return result

    def fail(self, exc: Exception, now: float) -> str:
        """Record an error (a recorder error ends the episode and holds the loop); returns a log line."""
        if isinstance(exc, RecorderError):
            self.session.abort(now)
            self.hold = True
            if self.mirror is not None:
                self.mirror.discard()
        self.last_error = str(exc)
        return f"error: {exc}"

    def status(self, now: float) -> dict[str, object]:
        """Snapshot for the node's status topic."""
        return {
            "state": self.session.state.value,
            "next_index": self.session.next_index,
            "success": self.session.success,
            "deadman_alive": self.deadman.age(now) <= self.deadman.config.timeout_s,
            "deadman_trips": self.deadman.trips,
            "hold": self.hold,
            "last_error": self.last_error,
            "saved": sum(1 for h in self.session.history if h.saved),
            "recorder_qa": self.recorder.qa_summary() if self.recorder else {},
        }
