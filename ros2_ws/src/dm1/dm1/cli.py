"""The `dm1` command line: `dm1 <command> ...`.

Each command lives in `dm1.commands.<module>` and defines `register(subparsers)`, which adds its parser and
sets `func` to a handler `(args) -> int`. Handlers import heavy dependencies (torch, mujoco, rclpy) lazily,
so `dm1 --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

# Order is the order shown in `dm1 --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "train",
    "export",
    "data",
    "sim",
    "launch",
    "operator",
    "robot",
    "eval",
    "ablate",
    "bench",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="dm1", description="DM1 one-step policies: train, export, run on a Franka."
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"dm1.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"dm1.commands.{name}":
                continue  # command not provided in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dm1` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from dm1.errors import ReportedError

    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except ReportedError as exc:  # a bad model, checkpoint, card or episode; a graph that did not start
        print(f"dm1 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dm1 ... | head`: the reader left; no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as exc:  # Ctrl-C where the command has no handler of its own (e.g. importing)
        from dm1 import interrupts

        print(f"dm1 {args.command}: interrupted", file=sys.stderr)
        return interrupts.exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
