"""Teleop input devices behind one small interface.

`TeleopDevice.read(ctx)` returns a `DeviceCommand` (or None when the device produced nothing usable this
tick — the deadman then runs out). Human devices give *deltas* (metres to add to the held target this
tick); the scripted expert gives *absolute* end-effector targets. Hardware libraries are imported lazily
inside `open()`; a missing library or device raises `DeviceUnavailableError`, saying what to fix.

Keys (keyboard device): w/s ±x, a/d ±y, r/f ±z, space toggles the gripper, e enable toggle; episode control:
n start, m stop+save, x discard, y mark success, u mark failure.

The interface (`TeleopDevice`, `DeviceContext`, `DeviceCommand`, `EVENTS`, `DeviceUnavailableError`) lives in
`dm1.teleop.device_interface`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from dm1.teleop.device_interface import DeviceCommand, DeviceContext, DeviceUnavailableError, TeleopDevice


def _import(module: str, device: str, hint: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise DeviceUnavailableError(
            f"{device}: Python package '{module}' is not installed ({hint})"
        ) from exc


class SpaceMouseDevice:
    """3Dconnexion SpaceMouse via `pyspacemouse` (hidapi). Axes in [-1, 1] scale to `max_speed` m/s.

    Left button toggles the gripper, right button marks success.
    """

    name = "spacemouse"

    def __init__(self, max_speed: float = 0.15, deadband: float = 0.05) -> None:
        if max_speed <= 0 or not 0 <= deadband < 1:
            raise ValueError(
                f"SpaceMouseDevice: need max_speed > 0 and deadband in [0, 1), got {max_speed}, {deadband}"
            )
        self.max_speed, self.deadband = max_speed, deadband
        self._lib: Any = None
        self._gripper = 0.0
        self._buttons: list[int] = []

    def open(self) -> None:
        lib = _import("pyspacemouse", "SpaceMouse", "pip install pyspacemouse; apt install libhidapi-dev")
        try:
            ok = lib.open()
        except Exception as exc:  # the library raises various errors when hidapi/device access fails
            raise DeviceUnavailableError(f"SpaceMouse: could not open the device ({exc})") from exc
        if not ok:
            raise DeviceUnavailableError(
                "SpaceMouse: no device found (is it plugged in, with hidraw permissions?)"
            )
        self._lib = lib

    def read(self, ctx: DeviceContext) -> DeviceCommand | None:
        if self._lib is None:
            return None
        try:
            s = self._lib.read()
        except Exception:  # unplugged mid-session: no input → deadman holds
            return None
        axes = np.array([s.x, s.y, s.z], dtype=np.float64)
        axes[np.abs(axes) < self.deadband] = 0.0
        buttons = list(getattr(s, "buttons", []) or [])
        pressed = [b and not (i < len(self._buttons) and self._buttons[i]) for i, b in enumerate(buttons)]
        self._buttons = buttons
        events: tuple[str, ...] = ()
        if len(pressed) > 0 and pressed[0]:
            self._gripper = 1.0 - self._gripper
        if len(pressed) > 1 and pressed[1]:
            events = ("mark_success",)
        return DeviceCommand(ctx.now, "delta", axes * self.max_speed * ctx.dt, self._gripper, True, events)

    def close(self) -> None:
        if self._lib is not None:
            with contextlib.suppress(Exception):
                self._lib.close()
            self._lib = None


class KeyboardDevice:
    """Terminal keyboard in cbreak mode (stdlib `termios`): each key press moves the target `step` metres."""

    name = "keyboard"
    MOVES = {"w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "r": (2, 1), "f": (2, -1)}
    KEY_EVENTS = {"n": "start", "m": "stop_save", "x": "discard", "y": "mark_success", "u": "mark_failure"}

    def __init__(self, step: float = 0.01, stream: Any = None) -> None:
        if not 0 < step <= 0.05:
            raise ValueError(f"KeyboardDevice.step: expected a value in (0, 0.05] m, found {step!r}")
        self.step = step
        self._stream = stream if stream is not None else sys.stdin
        self._saved: Any = None
        self._gripper = 0.0
        self._enabled = True
        self._open = False

    def open(self) -> None:
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError) as exc:
            raise DeviceUnavailableError(
                "keyboard: stdin has no file descriptor (run the node in a terminal)"
            ) from exc
        if not os.isatty(fd):
            raise DeviceUnavailableError(
                "keyboard: stdin is not a terminal (run the teleop node in a terminal)"
            )
        import termios
        import tty

        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._open = True

    def _pending(self) -> str:
        import select

        fd = self._stream.fileno()
        chars = []
        while select.select([fd], [], [], 0.0)[0]:
            data = os.read(fd, 64)
            if not data:
                break
            chars.append(data.decode(errors="ignore"))
        return "".join(chars)

    def read(self, ctx: DeviceContext) -> DeviceCommand | None:
        if not self._open:
            return None
        try:
            keys = self._pending()
        except OSError:
            return None
        return self.command_from_keys(keys, ctx.now)

    def command_from_keys(self, keys: str, stamp: float) -> DeviceCommand:
        """Translate the characters typed since the last tick into a command (pure; unit-tested)."""
        delta = np.zeros(3)
        events: list[str] = []
        for ch in keys.lower():
            if ch in self.MOVES:
                axis, sign = self.MOVES[ch]
                delta[axis] += sign * self.step
            elif ch == " ":
                self._gripper = 1.0 - self._gripper
            elif ch == "e":
                self._enabled = not self._enabled
            elif ch in self.KEY_EVENTS:
                events.append(self.KEY_EVENTS[ch])
        return DeviceCommand(stamp, "delta", delta, self._gripper, self._enabled, tuple(events))

    def close(self) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None
        self._open = False


class GamepadDevice:
    """Gamepad via `pygame` (SDL joystick). Hold the left shoulder (button 4) to move; A toggles the gripper.

    Left stick x/y, right stick vertical z; axes scale to `max_speed` m/s.
    """

    name = "gamepad"

    def __init__(self, max_speed: float = 0.15, deadband: float = 0.1, index: int = 0) -> None:
        if max_speed <= 0 or not 0 <= deadband < 1 or index < 0:
            raise ValueError(f"GamepadDevice: bad max_speed/deadband/index {max_speed}, {deadband}, {index}")
        self.max_speed, self.deadband, self.index = max_speed, deadband, index
        self._pg: Any = None
        self._js: Any = None
        self._gripper = 0.0
        self._a_was = False

    def open(self) -> None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        pg = _import("pygame", "gamepad", "pip install pygame")
        pg.init()
        pg.joystick.init()
        if pg.joystick.get_count() <= self.index:
            raise DeviceUnavailableError(
                f"gamepad: no joystick #{self.index} ({pg.joystick.get_count()} connected)"
            )
        self._js = pg.joystick.Joystick(self.index)
        self._js.init()
        self._pg = pg

    def read(self, ctx: DeviceContext) -> DeviceCommand | None:
        if self._js is None:
            return None
        try:
            self._pg.event.pump()
            ax = [self._js.get_axis(i) for i in (1, 0, 4)]
            enable = bool(self._js.get_button(4))
            a = bool(self._js.get_button(0))
        except Exception:  # pygame.error on unplug
            return None
        axes = -np.array(ax, dtype=np.float64)  # stick up = +x (forward), left = +y, right stick up = +z
        axes[np.abs(axes) < self.deadband] = 0.0
        if a and not self._a_was:
            self._gripper = 1.0 - self._gripper
        self._a_was = a
        return DeviceCommand(ctx.now, "delta", axes * self.max_speed * ctx.dt, self._gripper, enable)

    def close(self) -> None:
        if self._pg is not None:
            self._pg.quit()
        self._pg = self._js = None


class JoyDevice:
    """Joystick axes from a `sensor_msgs/Joy` topic (ROS `joy_node`, or any publisher); the node calls `push`.

    axes[0..2] → x, y, z velocity in [-1, 1] (scaled to `max_speed` m/s); button 0 held = gripper closed;
    button 1 = enable (if the deadman requires it). Each sample keeps its receive stamp, so a publisher that
    stops makes the deadman run out.
    """

    name = "joy"

    def __init__(self, max_speed: float = 0.15) -> None:
        if not 0 < max_speed <= 1.0:
            raise ValueError(f"JoyDevice.max_speed: expected (0, 1] m/s, found {max_speed!r}")
        self.max_speed = max_speed
        self._latest: tuple[float, np.ndarray, list[int]] | None = None

    def open(self) -> None:
        self._latest = None

    def push(self, axes: list[float], buttons: list[int], stamp: float) -> None:
        """New Joy message received at `stamp` (node clock)."""
        ax = np.zeros(3)
        n = min(3, len(axes))
        ax[:n] = np.clip(np.asarray(axes[:n], dtype=np.float64), -1.0, 1.0)
        self._latest = (stamp, np.nan_to_num(ax), list(buttons))

    def read(self, ctx: DeviceContext) -> DeviceCommand | None:
        if self._latest is None:
            return None
        stamp, ax, buttons = self._latest
        grip = 1.0 if buttons[:1] == [1] else 0.0
        enable = len(buttons) > 1 and bool(buttons[1])
        return DeviceCommand(stamp, "delta", ax * self.max_speed * ctx.dt, grip, enable)

    def close(self) -> None:
        self._latest = None


class ScriptedExpertDevice:
    """The twin's scripted lift expert as a device: absolute `[x, y, z, gripper]` targets each tick.

    Needs the measured EE position, gripper width and cube position in the context; returns None (→ deadman)
    until all three are known, and between episodes (`ctx.recording` false): the expert drives the arm only
    while an episode is open, so the arm can be homed and the scene reset in between without it moving
    away. `expert_factory` defaults to `dm1.sim.expert.expert_for(TwinConfig())`.

    With `recovery_fraction` f > 0 a fraction f of the demonstrations (drawn from `seed`) start with a
    deliberate miss (`ScriptedLiftExpert.reset(miss_rng=...)`); its commands carry `perturbed=True`.
    """

    name = "scripted"

    def __init__(
        self, expert_factory: Callable[[], Any] | None = None, recovery_fraction: float = 0.0, seed: int = 0
    ) -> None:
        from dm1.sim.expert import check_recovery_fraction  # numpy only; the twin is not loaded

        check_recovery_fraction(recovery_fraction, "scripted: recovery_fraction")
        self._factory = expert_factory
        self._expert: Any = None
        self._recovery_fraction = recovery_fraction
        self._rng = np.random.default_rng(seed)

    def open(self) -> None:
        if self._factory is None:
            try:
                from dm1.sim.config import TwinConfig
                from dm1.sim.expert import expert_for
            except ImportError as exc:
                raise DeviceUnavailableError(
                    f"scripted: dm1.sim.ScriptedLiftExpert is not importable ({exc})"
                ) from exc
            self._factory = lambda: expert_for(TwinConfig())
        self._expert = self._factory()

    def reset(self) -> None:
        """Start a fresh demonstration (new expert state; a planned miss for a recovery demo)."""
        if self._factory is not None:
            self._expert = self._factory()
            if self._recovery_fraction > 0:  # a fresh expert is already reset for a plain demo
                self._expert.start_demo(self._recovery_fraction, self._rng)

    def read(self, ctx: DeviceContext) -> DeviceCommand | None:
        if self._expert is None or ctx.ee_pos is None or ctx.gripper_width is None or ctx.cube_pos is None:
            return None
        if not ctx.recording:
            return None
        out = np.asarray(
            self._expert.act(ctx.ee_pos, ctx.gripper_width, ctx.cube_pos, ctx.episode_time), float
        )
        if out.shape != (4,) or not np.all(np.isfinite(out)):
            raise ValueError(f"scripted expert: expected 4 finite values [x, y, z, gripper], found {out!r}")
        grip = float(np.clip(out[3], 0.0, 1.0))
        perturbed = bool(getattr(self._expert, "perturbed", False))
        return DeviceCommand(ctx.now, "absolute", out[:3], grip, perturbed=perturbed)

    def close(self) -> None:
        self._expert = None


DEVICES: dict[str, Callable[..., TeleopDevice]] = {
    "spacemouse": SpaceMouseDevice,
    "keyboard": KeyboardDevice,
    "gamepad": GamepadDevice,
    "joy": JoyDevice,
    "scripted": ScriptedExpertDevice,
}


def make_device(name: str, **kwargs: Any) -> TeleopDevice:
    """Construct a device by name (not opened yet)."""
    if name not in DEVICES:
        raise ValueError(f"teleop device: unknown {name!r}, expected one of {sorted(DEVICES)}")
    return DEVICES[name](**kwargs)
