"""`dm1 data <action>`: dataset tools (`synth`, `collect`, `info`, `validate`, `stats`, `plot`, `convert`).

Actions are registered in ``ACTIONS`` (name -> (add_arguments, handler)); later issues add theirs there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dm1 import interrupts
from dm1.commands.arg_types import (
    episode_length,
    fraction,
    loopback_host_or_auto,
    non_negative_int,
    positive_float,
    positive_int,
)

_SIZE_RE = re.compile(r"^(\d+)(?:x(\d+))?$")
MIN_IMAGE_SIZE = 8  # `make_synthetic_dataset`'s smallest image side


def _image_size(text: str) -> tuple[int, int]:
    """`N` or `HxW` (both >= 8) as (H, W); otherwise `expected N or HxW ..., found <text>`."""
    m = _SIZE_RE.match(text.strip().lower())
    size = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, 0)
    if min(size) < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(
            f"expected N or HxW with sides >= {MIN_IMAGE_SIZE} (e.g. 96 or 96x128), found {text!r}"
        )
    return size


def _camera_names(text: str) -> tuple[str, ...]:
    """Comma-separated unique identifiers (`front,wrist`); otherwise `expected ..., found <text>`."""
    from dm1.data.episode_checks import bad_camera_names  # h5py, numpy: only when `data synth` parses

    cams = tuple(c.strip() for c in text.split(","))
    problem = bad_camera_names(cams)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem} (comma-separated, e.g. front,wrist)")
    return cams


def _add_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="dataset directory (episodes are appended; episodes of another layout there are refused)",
    )
    p.add_argument(
        "--episodes", type=positive_int, default=20, help="number of episodes (default: %(default)s)"
    )
    p.add_argument(
        "--length",
        type=episode_length,
        default=48,
        help="steps per episode, >= 2; a lift takes about 40 (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="random seed; appending continues at seed + the number of the first new episode, so a second "
        "run adds new episodes, not copies (default: %(default)s)",
    )
    p.add_argument("--image-size", type=_image_size, default=(96, 96), help="N or HxW (default: 96)")
    p.add_argument(
        "--cameras",
        type=_camera_names,
        default="front,wrist",
        help="comma-separated camera names, identifiers (default: %(default)s)",
    )


def _synth(args: argparse.Namespace) -> int:
    from dm1.data.synthetic import make_synthetic_dataset

    index = make_synthetic_dataset(
        args.out, args.episodes, args.length, args.seed, args.cameras, args.image_size
    )
    print(
        f"wrote {args.episodes} episodes to {args.out}: {len(index.episodes)} episodes, "
        f"{index.total_steps} steps, dataset_sha256 {index.dataset_sha256[:16]}"
    )
    return 0


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="dataset directory or one episode file")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _episode_summary(ep: Any) -> dict[str, Any]:
    return {
        "file": ep.path.name,
        "length": ep.length,
        "success": ep.success,
        "duration_s": float(ep.timestamps[-1] - ep.timestamps[0]),
        "cameras": {c: list(s) for c, s in ep.image_shapes.items()},
        "proprio": {k: int(v.shape[1]) for k, v in ep.proprio.items()},
        "action_space": ep.action_space,
        "action_names": ep.action_names,
        "control_rate_hz": ep.control_rate_hz,
        "frame": ep.frame,
        "created": ep.created,
        "perturbed_steps": 0 if ep.perturbed is None else int(ep.perturbed.sum()),  # recovery demos' misses
    }


def _info(args: argparse.Namespace) -> int:
    from dm1.data.episode import read_episode
    from dm1.data.index import DatasetIndex
    from dm1.data.tools import dataset_info

    path = Path(args.path)
    if path.is_file():
        out = _episode_summary(read_episode(path, load_images=False))
    else:
        info = dataset_info(path)  # lengths, success rate, recovery demos, schema, duration; none: an error
        index = DatasetIndex(path).update()
        out = {k: v for k, v in index.to_dict().items() if k != "episodes"}  # hash, totals, bad files
        out |= info
        if index.episodes:
            out["first_episode"] = _episode_summary(read_episode(index.episode_paths()[0], load_images=False))
        for name, diffs in info.get("layout_differs", {}).items():
            print(
                f"dm1 data info: warning: {path / name}: layout differs from the first episode "
                f"({'; '.join(diffs)}); the summary shows the first episode's",
                file=sys.stderr,
            )
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


def _add_collect(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="dataset directory (episodes are appended; a different dataset there is refused)",
    )
    p.add_argument("--episodes", type=positive_int, default=50, help="expert episodes to attempt")
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="first cube seed (episode i uses seed + i)"
    )
    p.add_argument("--keep-failures", action="store_true", help="also keep failed episodes (success=False)")
    p.add_argument(
        "--max-sim-s", type=positive_float, default=20.0, help="time limit per episode (simulation s)"
    )
    p.add_argument(
        "--recovery-fraction",
        type=fraction,
        default=0.0,
        help="fraction of episodes whose first grasp is a deliberate miss that the expert then recovers "
        "from (the miss is marked `perturbed` and not learned; default 0)",
    )
    p.add_argument(
        "--via-teleop",
        action="store_true",
        help="record through the ROS 2 graph (twin + controller + teleop node, device scripted) instead of "
        "in-process; writes <out>/launch.log",
    )
    p.add_argument(
        "--sim-host",
        default="auto",
        type=loopback_host_or_auto,
        help="--via-teleop: loopback address of the twin's franky server (auto: a free one)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one line of JSON")


def _collect(args: argparse.Namespace) -> int:
    try:
        with _sigterm_as_ctrl_c():
            out = _run_collect(args)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the collectors discard the open episode
        code = interrupts.exit_code(exc)
        print(
            f"dm1 data collect: interrupted ({signal.Signals(code - 128).name}); the open episode was "
            "discarded, saved episodes are kept",
            file=sys.stderr,
        )
        return code
    except (RuntimeError, TimeoutError) as exc:  # the graph failed (--via-teleop) or the twin stalled
        print(f"dm1 data collect: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['successes']}/{out['episodes']} expert successes, {out['kept']} episodes kept "
            f"in {args.out} ({out['sim_s']:.0f} sim s in {out['wall_s']:.0f} wall s, {out['via']})"
        )
    return 0


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """In the block SIGTERM raises KeyboardInterrupt("received SIGTERM") as Ctrl-C does, so that a stopped
    collection discards its open episode instead of leaving a `.partial` (default SIGTERM: killed at once).

    The in-process collection has no safe points to poll `dm1.interrupts` at, so it is raised at once, as
    Python's own SIGINT handler does; through ROS (`--via-teleop`) `graph_stopped_after` defers both signals
    to the driver's next spin step (`dm1.interrupts`) inside this block.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers: main thread only
        yield
        return

    def raise_interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _run_collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run in-process or through the teleop node; returns the summary dict."""
    common = {
        "seed": args.seed,
        "max_sim_s": args.max_sim_s,
        "keep_failures": args.keep_failures,
        "progress": not args.json,
    }
    recovery = args.recovery_fraction
    if args.via_teleop:
        from dm1.commands.collect_teleop import collect_via_teleop

        return collect_via_teleop(
            args.out, args.episodes, sim_host=args.sim_host, recovery_fraction=recovery, **common
        )
    from dataclasses import asdict

    from dm1.sim.collect import collect_expert_demos

    summary = collect_expert_demos(args.out, args.episodes, recovery_fraction=recovery, **common)
    out = {"out": args.out, "via": "in-process", **asdict(summary)}
    out["episodes"] = out.pop("attempted")
    return out


ACTIONS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]
] = {
    "synth": (_add_synth, _synth, "write a synthetic toy Lift dataset (same schema as the twin)"),
    "info": (_add_info, _info, "summarise a dataset directory or an episode file"),
    "collect": (
        _add_collect,
        _collect,
        "record scripted-expert Lift demos on the twin (in-process, or through ROS 2 with --via-teleop)",
    ),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` subcommand and its actions."""
    p = subparsers.add_parser(
        "data",
        help="dataset tools: synth, collect, info, validate, stats, plot, convert",
        description="Episode dataset tools.",
    )
    sub = p.add_subparsers(dest="data_action", metavar="<action>")
    for name, (add_args, handler, help_text) in ACTIONS.items():
        ap = sub.add_parser(name, help=help_text, description=help_text)
        add_args(ap)
        ap.set_defaults(func=_guarded(handler))
    from dm1.data.tools import TOOL_NAMES, register_tools

    register_tools(sub)
    for name in TOOL_NAMES:  # the same one-line errors as the actions above
        tool = sub.choices[name]
        tool.set_defaults(func=_guarded(tool.get_default("func")))
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected user errors (bad values, missing or existing paths, a full disk) into one-line messages
    and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except BrokenPipeError:  # `dm1 data info | head`: not a data error (dm1.cli.main handles it)
            raise
        except (ValueError, OSError) as exc:
            print(f"dm1 data {args.data_action}: error: {exc}", file=sys.stderr)
            return 2

    return run
