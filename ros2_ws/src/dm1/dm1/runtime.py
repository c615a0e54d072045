"""onnxruntime policy runtime: `model.onnx` + `model_card.json` → action chunks (numpy + onnxruntime only).

This module is on the robot path: it must never import torch (tests/test_runtime.py checks this).

    rt = PolicyRuntime.load("models/lift")
    actions = rt.predict({"front": img_hw3_uint8, "wrist": img2}, proprio_p)   # (Ta, Da) float32
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dm1.errors import ReportedError
from dm1.modelcard import (
    CARD_FILENAME,
    ONNX_FILENAME,
    ModelCard,
    load_card,
    onnx_hash_problem,
)
from dm1.modelcard_checks import ModelCardError
from dm1.paths import PICKLE_SUFFIXES

#: Execution providers in order of preference; the first available ones are used.
PROVIDER_PREFERENCE: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)

_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(double)": "float64"}


class ModelLoadError(ReportedError, ValueError):
    """The model directory cannot be loaded safely (missing, pickled, corrupt, or disagrees with its card)."""


class InputError(ValueError):
    """An observation passed to `predict` is invalid; the message names the field, expected and found."""


class OutputError(RuntimeError):
    """The network produced an invalid output (e.g. NaN/Inf); the chunk must not reach the robot."""


def select_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Providers to use: `requested` (each must be available) or TensorRT → CUDA → CPU among the available."""
    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ModelLoadError(
                f"providers: expected a subset of the available {available}, found {missing}"
            )
        return list(requested)
    chosen = [p for p in PROVIDER_PREFERENCE if p in available]
    return chosen or list(available)


#: Spin policies for the intra-op pool's idle workers (see `session_options`).
SPIN_POLICIES: tuple[str, ...] = ("run", "always", "never")
#: How long an idle worker spins for the next operator of the same run before it sleeps (microseconds).
SPIN_DURATION_US = 400
#: onnxruntime graph rewrites left off. SkipLayerNormFusion: in the exported DM1 graph its CPU kernel took
#: ~110 us per call at (1, 121, 128) against ~25 us for the Add + LayerNormalization it replaces (profiled,
#: onnxruntime 1.32); end to end, 2 threads, the bundled model ran ~3 % faster without it.
DISABLED_OPTIMIZERS: tuple[str, ...] = ("SkipLayerNormFusion",)


def session_options(num_threads: int | None = None, spinning: bool | str = "run") -> ort.SessionOptions:
    """Options tuned for batch-1 latency on a small CPU: all graph optimizations, sequential execution.

    spinning: what idle intra-op workers do between operators. "run" (the default) spins for
    at most `SPIN_DURATION_US` while a `run()` is in progress, so handing each of the graph's ~100 operators
    to the pool does not cost a futex wake-up, and stops spinning the moment `run()` returns
    (`session.force_spinning_stop`): between control ticks the pool sleeps and leaves the cores to the ROS
    nodes, controller and cameras. "always" (True) is onnxruntime's default: workers keep spinning after a run
    too. "never" (False) always parks them, which costs a wake-up per operator.
    """
    if num_threads is None:
        num_threads = default_num_threads()
    if num_threads < 1:
        raise ModelLoadError(f"num_threads: expected >= 1, found {num_threads}")
    policy = ("always" if spinning else "never") if isinstance(spinning, bool) else spinning
    if policy not in SPIN_POLICIES:
        raise ModelLoadError(f"spinning: expected one of {list(SPIN_POLICIES)} or a bool, found {spinning!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = num_threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only
    so.add_session_config_entry("session.intra_op.allow_spinning", "0" if policy == "never" else "1")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")  # sequential: the pool is unused
    if policy == "run":
        so.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_DURATION_US))
        so.add_session_config_entry("session.force_spinning_stop", "1")
    return so


def default_num_threads() -> int:
    """CPU cores this process may run on (at most 4: batch-1 inference does not scale further)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def refuse_pickle(path: Path) -> None:
    """Raise `ModelLoadError` if `path` looks like a pickle file."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{path}: refusing to load a pickle-format file ({path.suffix}); pickles can execute arbitrary "
            f"code. Expected a model directory with {ONNX_FILENAME} + {CARD_FILENAME} (see `dm1 export`)."
        )


class PolicyRuntime:
    """A loaded, validated ONNX policy. Use `PolicyRuntime.load(model_dir)`."""

    def __init__(self, session: ort.InferenceSession, card: ModelCard, model_dir: Path) -> None:
        self._session = session
        self.card = card
        self.model_dir = model_dir
        self._rng = np.random.default_rng()
        self._input_names = [i.name for i in session.get_inputs()]
        self._image_specs = {c.name: tuple(c.shape) for c in card.cameras}
        self._proprio_dim = card.proprio.dim
        self._noise_shape = tuple(card.noise_shape)

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike[str],
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
        spinning: bool | str = "run",
    ) -> PolicyRuntime:
        """Load `model.onnx` + `model_card.json` from `model_dir`; verify hash and graph I/O vs the card.

        providers: execution providers (default TensorRT → CUDA → CPU, those available); num_threads: intra-op
        threads (default: this process's cores, at most 4); spinning: idle-worker policy (`session_options`).
        Raises `ModelLoadError` naming the file and what was expected and found.
        """
        path = Path(model_dir)
        refuse_pickle(path)
        if path.is_file() and path.name == ONNX_FILENAME:
            path = path.parent
        if not path.is_dir():
            raise ModelLoadError(f"{path}: expected a model directory with {ONNX_FILENAME} + {CARD_FILENAME}")
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise ModelLoadError(
                f"{path}: refusing a model directory containing pickle-format files {pickles}; expected only "
                f"{ONNX_FILENAME} + {CARD_FILENAME} (pickles can execute arbitrary code)"
            )
        onnx_path = path / ONNX_FILENAME
        if not onnx_path.is_file():
            raise ModelLoadError(f"{onnx_path}: missing (expected the exported ONNX graph)")
        try:
            card = load_card(path / CARD_FILENAME)
        except ModelCardError as exc:
            raise ModelLoadError(str(exc)) from exc
        data = onnx_path.read_bytes()
        if problem := onnx_hash_problem(card, onnx_path, hashlib.sha256(data).hexdigest()):
            raise ModelLoadError(problem)
        try:
            session = ort.InferenceSession(
                data,
                sess_options=session_options(num_threads, spinning),
                providers=select_providers(providers),
                disabled_optimizers=list(DISABLED_OPTIMIZERS),
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise ModelLoadError(f"{onnx_path}: onnxruntime cannot load the graph: {exc}") from exc
        check_graph_matches_card(session, card, onnx_path)
        return cls(session, card, path)

    # ------------------------------------------------------------------------------------------- inference
    @property
    def providers(self) -> list[str]:
        """Execution providers of the session, in priority order."""
        return list(self._session.get_providers())

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying onnxruntime session (for benchmarks and diagnostics)."""
        return self._session

    def predict(
        self,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray,
        noise: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """One-step action chunk (Ta, Da) float32, de-normalized and clipped by the graph.

        images: camera name → (H, W, 3) uint8; proprio: (P,) float; noise: (Ta, Da) float or None (drawn from
        `rng`, else the runtime's own generator).
        """
        feeds = self.prepare_inputs(images, proprio, noise, rng)
        (out,) = self._session.run(["actions"], feeds)
        actions = out[0]
        if not np.all(np.isfinite(actions)):
            bad = int(np.size(actions) - np.count_nonzero(np.isfinite(actions)))
            raise OutputError(f"actions: expected finite values, found {bad} NaN/Inf of {actions.size}")
        return actions

    def warmup(self, iterations: int = 5) -> None:
        """Run a few inferences on neutral inputs so that the first real call is not slow."""
        images = {n: np.zeros(s, np.uint8) for n, s in self._image_specs.items()}
        proprio = np.zeros(self._proprio_dim, np.float32)
        noise = np.zeros(self._noise_shape, np.float32)
        for _ in range(max(1, iterations)):
            self._session.run(["actions"], self.prepare_inputs(images, proprio, noise, None))

    def prepare_inputs(
        self,
        images: Mapping[str, np.ndarray],
        proprio: np.ndarray,
        noise: np.ndarray | None,
        rng: np.random.Generator | None,
    ) -> dict[str, np.ndarray]:
        """Validate one observation and return the session feeds (batch dimension added); see `predict`."""
        images, p, z = validate_observation(
            self.card, images, proprio, noise, rng if rng is not None else self._rng
        )
        feeds = {f"image_{name}": img[None] for name, img in images.items()}  # (1, H, W, 3)
        feeds["proprio"], feeds["noise"] = p[None], z[None]  # (1, P), (1, Ta, Da)
        return feeds


def validate_observation(
    card: ModelCard,
    images: Mapping[str, np.ndarray],
    proprio: np.ndarray,
    noise: np.ndarray | None,
    rng: np.random.Generator | None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Check one observation against `card`.

    Returns (images {camera: (H, W, 3) uint8}, proprio (P,) f32, noise (Ta, Da) f32, drawn from `rng` when
    None). Raises `InputError` naming the field, what was expected and what was found.
    """
    if not isinstance(images, Mapping):
        raise InputError(
            f"images: expected a dict camera name → (H, W, 3) uint8, found {type(images).__name__}"
        )
    specs = {c.name: tuple(c.shape) for c in card.cameras}
    noise_shape = tuple(card.noise_shape)
    expected, found = set(specs), set(images)
    if expected != found:
        raise InputError(
            f"images: expected cameras {sorted(expected)}, found {sorted(found)} "
            f"(missing {sorted(expected - found)}, unexpected {sorted(found - expected)})"
        )
    out: dict[str, np.ndarray] = {}
    for name, shape in specs.items():
        img = images[name]
        if not isinstance(img, np.ndarray):
            raise InputError(f"images['{name}']: expected numpy.ndarray, found {type(img).__name__}")
        if img.dtype != np.uint8:
            raise InputError(f"images['{name}']: expected dtype uint8, found {img.dtype}")
        if img.shape != shape:
            raise InputError(f"images['{name}']: expected shape {shape} (H, W, 3), found {img.shape}")
        out[name] = np.ascontiguousarray(img)
    p = _float_input("proprio", proprio, (card.proprio.dim,))
    if noise is None:
        noise = (rng if rng is not None else np.random.default_rng()).standard_normal(
            noise_shape, dtype=np.float32
        )
    return out, p, _float_input("noise", noise, noise_shape)


def _float_input(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise InputError(f"{name}: expected numpy.ndarray of shape {shape}, found {type(value).__name__}")
    if value.dtype not in (np.float32, np.float64):
        raise InputError(f"{name}: expected dtype float32 (or float64), found {value.dtype}")
    if value.shape != shape:
        raise InputError(f"{name}: expected shape {shape}, found {value.shape}")
    if not np.all(np.isfinite(value)):
        idx = np.flatnonzero(~np.isfinite(value)).tolist()
        raise InputError(f"{name}: expected finite values, found NaN/Inf at flat indices {idx[:8]}")
    return np.ascontiguousarray(value, dtype=np.float32)


def check_graph_matches_card(session: ort.InferenceSession, card: ModelCard, onnx_path: Path) -> None:
    """Raise `ModelLoadError` unless the graph's input/output names, shapes and dtypes equal the card's."""
    where = f"{onnx_path} vs {card.source}"
    for kind, actual, expected in (
        ("inputs", session.get_inputs(), card.onnx_inputs()),
        ("outputs", session.get_outputs(), card.onnx_outputs()),
    ):
        got = {a.name: a for a in actual}
        if set(got) != set(expected):
            raise ModelLoadError(
                f"{where}: graph {kind} names: card expects {sorted(expected)}, ONNX has {sorted(got)}"
            )
        for name, (shape, dtype) in expected.items():
            arg = got[name]
            g_dtype = _ORT_TYPES.get(arg.type, arg.type)
            if g_dtype != dtype:
                raise ModelLoadError(
                    f"{where}: {kind[:-1]} '{name}' dtype: card expects {dtype}, ONNX has {g_dtype}"
                )
            g_shape = list(arg.shape)
            ok = len(g_shape) == len(shape) and all(
                g == e or (i == 0 and not isinstance(g, int))
                for i, (g, e) in enumerate(zip(g_shape, shape, strict=True))
            )
            if not ok:
                raise ModelLoadError(
                    f"{where}: {kind[:-1]} '{name}' shape: card expects {list(shape)}, ONNX has {g_shape}"
                )
