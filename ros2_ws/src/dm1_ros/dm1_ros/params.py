"""Typed, bounded ROS parameters from plain tables: one descriptor builder shared by every dm1 node.

A table maps ``name -> (default, description, bounds)``; the default fixes the type (str, bool, int, float,
list of str, tuple of float) and ``bounds`` (``(lo, hi)`` or None) becomes the descriptor's integer or
floating-point range, so out-of-range values are refused by rclpy when the node starts or is reconfigured.
A refusal at start is a ValueError naming the node and the parameter (`declare`), which every dm1 node turns
into one line and a non-zero exit, as for any other bad configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rcl_interfaces.msg import ParameterType as T
from rclpy.exceptions import ParameterException
from rclpy.node import Node

#: name -> (default, description, (lo, hi) or None)
ParamTable = Mapping[str, tuple[Any, str, "tuple[float, float] | None"]]

_KIND = {
    str: T.PARAMETER_STRING,
    bool: T.PARAMETER_BOOL,
    int: T.PARAMETER_INTEGER,
    float: T.PARAMETER_DOUBLE,
    list: T.PARAMETER_STRING_ARRAY,
    tuple: T.PARAMETER_DOUBLE_ARRAY,
}


def descriptor(
    default: Any, text: str = "", bounds: tuple[float, float] | None = None, read_only: bool = False
) -> ParameterDescriptor:
    """A descriptor typed after ``default`` with ``bounds`` as its range (ints: integer range, step 1)."""
    try:
        kind = _KIND[type(default)]
    except KeyError:
        kinds, found = [k.__name__ for k in _KIND], type(default).__name__
        raise TypeError(f"parameter default: expected one of {kinds}, found {found}") from None
    # rclpy types an empty list default as BYTE_ARRAY: let string-array overrides through
    d = ParameterDescriptor(
        description=text, type=kind, read_only=read_only, dynamic_typing=kind == T.PARAMETER_STRING_ARRAY
    )
    if bounds is not None and kind == T.PARAMETER_DOUBLE:
        d.floating_point_range = [FloatingPointRange(from_value=float(bounds[0]), to_value=float(bounds[1]))]
    elif bounds is not None and kind == T.PARAMETER_INTEGER:
        d.integer_range = [IntegerRange(from_value=int(bounds[0]), to_value=int(bounds[1]), step=1)]
    elif bounds is not None:
        raise TypeError(f"parameter bounds: only int and float parameters take a range, found {kind}")
    return d


def declare(node: Node, name: str, default: Any, desc: ParameterDescriptor) -> Any:
    """`node.declare_parameter(name, default, desc).value`; rclpy's refusal of an override (out of range, of
    the wrong type) is raised as a ValueError naming the node and the parameter."""
    try:
        return node.declare_parameter(name, default, desc).value
    except ParameterException as exc:  # args: (message, parameter name); str() appends the name again
        raise ValueError(f"{node.get_name()}: parameter {name}: {exc.args[0] if exc.args else exc}") from None


def declare_table(node: Node, table: ParamTable, prefix: str = "", read_only: bool = False) -> dict[str, Any]:
    """Declare every entry of ``table`` on ``node`` (names prefixed); returns name -> value (unprefixed).

    Tuple defaults are declared as double arrays and returned as tuples; a list parameter set to `[]` in a
    YAML parameter file (which rclpy leaves unset) is returned as `[]`.
    """
    values = {}
    for name, (default, text, bounds) in table.items():
        initial = list(default) if isinstance(default, tuple) else default
        value = declare(node, prefix + name, initial, descriptor(default, text, bounds, read_only))
        if value is None and isinstance(default, list):  # `name: []` in a YAML parameter file: no type, unset
            value = []
        values[name] = tuple(value) if isinstance(default, tuple) else value
    return values


def freeze_parameters(node: Node, names: tuple[str, ...]) -> None:
    """Refuse every change of `names` after start: for parameters rclpy declares itself (`use_sim_time`),
    which cannot be declared read-only, but which the node read once (a switch of the clock under a running
    controller stamped its joint states with wall time and latched a misleading 'late chunks' fault)."""
    from rcl_interfaces.msg import SetParametersResult

    def check(params: list) -> SetParametersResult:
        frozen = sorted({p.name for p in params} & set(names))
        if frozen:
            reason = f"{', '.join(frozen)}: read once, at start (read-only); restart the node to change it"
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(check)


def init_ros(node_name: str, args: list[str] | None = None) -> Any:
    """`rclpy.init(args=args)`, whose return value also works as a context manager; command-line arguments rcl
    cannot parse (a malformed `-p name:=value`, a parameter file with a mixed-type list) end the process with
    one line naming the node and exit code 2, not an RCLError traceback."""
    import sys

    import rclpy
    from rclpy.impl.implementation_singleton import rclpy_implementation

    try:
        return rclpy.init(args=args)
    except rclpy_implementation.RCLError as exc:
        reason = str(exc).removeprefix("failed to initialize rcl: ").split(", at /")[0]
        print(f"{node_name}: bad --ros-args: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
