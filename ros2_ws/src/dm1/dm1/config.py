"""Typed, validated configuration for DM1 training (model, MeanFlow, dispersive, data, trainer).

Every dataclass validates itself in `__post_init__` and raises `ValueError` naming the field, what was
expected and what was found. Lists are coerced to tuples and ints to floats where the field is a float, so
YAML/JSON round-trips cleanly. `from_dict` rejects unknown keys by name. No torch import here: the export and
runtime side read configs too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dm1.config_base import _check, _coerce, _ConfigMixin

# Proprio keys of the contract (docs/architecture.md, `dm1.proprio`) and their widths.
PROPRIO_KEY_DIMS: dict[str, int] = {"ee_pos": 3, "ee_quat_xyzw": 4, "gripper_width": 1, "joint_pos": 7}
DISPERSIVE_VARIANTS: tuple[str, ...] = (
    "none",
    "infonce_l2",
    "infonce_l2_repo",
    "infonce_cosine",
    "hinge",
    "covariance",
)
OBJECTIVES: tuple[str, ...] = ("meanflow", "flow_matching")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_TARGET_RE = re.compile(r"^(cond|t_emb|r_emb|mlp\.\d+)$")
MAX_WIDTH = 65536  # channels / embedding / MLP widths: beyond this a network cannot be allocated anyway
MAX_DEPTH = 64  # ViT layers, MLP blocks, ViT MLP ratio
MAX_IMAGE_SIDE = 4096
MAX_THREADS = 256
MAX_SEED = 2**63 - 1  # torch accepts it (and + 1); numpy gets seed % 2**32 (the trainer)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(_ConfigMixin):
    """DM1 network shape (docs/method.md §7.2).

    History > 1 stacks image frames along channels and concatenates proprio frames.
    """

    camera_names: tuple[str, ...] = ("front", "wrist")
    image_size: tuple[int, int] = (96, 96)  # (H, W)
    proprio_dim: int = 4  # per frame
    action_dim: int = 4
    chunk_length: int = 4
    obs_history: int = 1
    vit_channels: int = 128
    vit_heads: int = 4
    vit_layers: int = 1
    vit_mlp_ratio: int = 4
    spatial_emb_dim: int = 128
    time_emb_dim: int = 16
    mlp_width: int = 768
    mlp_blocks: int = 1
    dropout: float = 0.1
    # The first `relative_action_dims` action dims are offsets from the same proprio dims of the newest
    # frame (e.g. 3: [x, y, z] relative to the observed ee_pos). The policy adds the observed values back,
    # so exported models still output absolute actions. 0 = absolute actions.
    relative_action_dims: int = 0

    def __post_init__(self) -> None:
        _coerce(self)
        c = "ModelConfig"
        cams = self.camera_names
        _check(len(cams) > 0, c, "camera_names", "at least one camera name", cams)
        for name in cams:
            _check(bool(_NAME_RE.match(name)), c, "camera_names", "identifiers like 'front' or 'wrist'", cams)
        _check(len(set(cams)) == len(cams), c, "camera_names", "unique names", cams)
        h, w = self.image_size
        side = MAX_IMAGE_SIDE
        _check(
            16 <= h <= side and 16 <= w <= side, c, "image_size", f"(H, W) in [16, {side}]", self.image_size
        )
        bounds = {"vit_heads": MAX_WIDTH, "vit_layers": MAX_DEPTH, "vit_mlp_ratio": MAX_DEPTH}
        bounds.update(dict.fromkeys(("vit_channels", "spatial_emb_dim", "mlp_width"), MAX_WIDTH))
        bounds.update(dict.fromkeys(("proprio_dim", "action_dim", "chunk_length", "obs_history"), 4096))
        for name, most in bounds.items():
            value = getattr(self, name)
            _check(1 <= value <= most, c, name, f"an int in [1, {most}]", value)
        _check(
            0 <= self.mlp_blocks <= MAX_DEPTH, c, "mlp_blocks", f"an int in [0, {MAX_DEPTH}]", self.mlp_blocks
        )
        _check(
            self.vit_channels % self.vit_heads == 0,
            c,
            "vit_heads",
            f"a divisor of vit_channels={self.vit_channels}",
            self.vit_heads,
        )
        _check(
            4 <= self.time_emb_dim <= MAX_WIDTH and self.time_emb_dim % 2 == 0,
            c,
            "time_emb_dim",
            f"an even int in [4, {MAX_WIDTH}]",
            self.time_emb_dim,
        )
        _check(0.0 <= self.dropout < 1.0, c, "dropout", "a float in [0, 1)", self.dropout)
        _check(
            0 <= self.relative_action_dims <= min(self.action_dim, self.proprio_dim),
            c,
            "relative_action_dims",
            f"an int in [0, min(action_dim, proprio_dim) = {min(self.action_dim, self.proprio_dim)}]",
            self.relative_action_dims,
        )

    @property
    def num_tokens(self) -> int:
        """ViT tokens per camera: Conv(k8, s4) then Conv(k3, s2) on (H, W); 121 at 96x96."""
        h, w = self.image_size
        h1, w1 = (h - 8) // 4 + 1, (w - 8) // 4 + 1
        return ((h1 - 3) // 2 + 1) * ((w1 - 3) // 2 + 1)

    @property
    def cond_dim(self) -> int:
        """Width of the conditioning vector: spatial features of all cameras + stacked proprio."""
        return len(self.camera_names) * self.spatial_emb_dim + self.proprio_dim * self.obs_history


@dataclass(frozen=True, kw_only=True)
class MeanFlowConfig(_ConfigMixin):
    """(t, r) sampling and loss weighting of the MeanFlow objective (docs/method.md §3-4)."""

    flow_ratio: float = 0.5  # exact fraction of each batch with r := t
    logit_mean: float = -0.4
    logit_std: float = 1.0
    boundary_fraction: float = 0.0  # extra fraction at exactly (t=1, r=0), the one-step query point
    adaptive_p: float = 0.0  # 0 = plain MSE
    adaptive_c: float = 1e-3

    def __post_init__(self) -> None:
        _coerce(self)
        c = "MeanFlowConfig"
        _check(0.0 <= self.flow_ratio <= 1.0, c, "flow_ratio", "a float in [0, 1]", self.flow_ratio)
        _check(self.logit_std > 0.0, c, "logit_std", "a float > 0", self.logit_std)
        _check(abs(self.logit_mean) < 10.0, c, "logit_mean", "a float in (-10, 10)", self.logit_mean)
        _check(
            0.0 <= self.boundary_fraction <= 1.0 and self.flow_ratio + self.boundary_fraction <= 1.0,
            c,
            "boundary_fraction",
            f"a float in [0, 1 - flow_ratio={1.0 - self.flow_ratio}]",
            self.boundary_fraction,
        )
        _check(0.0 <= self.adaptive_p <= 2.0, c, "adaptive_p", "a float in [0, 2]", self.adaptive_p)
        _check(self.adaptive_c > 0.0, c, "adaptive_c", "a float > 0", self.adaptive_c)


@dataclass(frozen=True, kw_only=True)
class DispersiveConfig(_ConfigMixin):
    """Dispersive regularizer (docs/method.md §6). Targets: cond, t_emb, r_emb, mlp.<i>."""

    variant: str = "infonce_l2"
    lam: float = 0.5
    tau: float = 0.5
    margin: float = 1.0
    targets: tuple[str, ...] = ("cond",)

    def __post_init__(self) -> None:
        _coerce(self)
        c = "DispersiveConfig"
        _check(
            self.variant in DISPERSIVE_VARIANTS, c, "variant", f"one of {DISPERSIVE_VARIANTS}", self.variant
        )
        _check(self.lam >= 0.0, c, "lam", "a float >= 0", self.lam)
        _check(self.tau > 0.0, c, "tau", "a float > 0", self.tau)
        _check(self.margin > 0.0, c, "margin", "a float > 0", self.margin)
        for t in self.targets:
            _check(
                bool(_TARGET_RE.match(t)),
                c,
                "targets",
                "items among cond, t_emb, r_emb, mlp.<i>",
                self.targets,
            )
        _check(len(set(self.targets)) == len(self.targets), c, "targets", "unique items", self.targets)
        if self.variant != "none":
            _check(
                len(self.targets) > 0, c, "targets", "at least one target (or variant 'none')", self.targets
            )

    @property
    def enabled(self) -> bool:
        """Whether the regularizer contributes to the loss."""
        return self.variant != "none" and self.lam > 0.0 and len(self.targets) > 0


@dataclass(frozen=True, kw_only=True)
class DataConfig(_ConfigMixin):
    """Where the episodes are and which observation keys feed the model."""

    dataset_dir: str
    proprio_keys: tuple[str, ...] = ("ee_pos", "gripper_width")
    camera_names: tuple[str, ...] = ("front", "wrist")
    random_shift_pad: int = 4

    @classmethod
    def _legacy_keys(cls, d: dict[str, Any], where: str) -> dict[str, Any]:
        """Drop ``val_fraction`` (older versions accepted 0 <= v < 1 and wrote it into checkpoints and cards,
        but nothing read it): a stored run still loads. A config a user writes refuses a non-zero value
        (`load_train_config`)."""
        if "val_fraction" not in d:
            return d
        value = d["val_fraction"]
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1:
            return {k: v for k, v in d.items() if k != "val_fraction"}
        raise ValueError(f"{where}.val_fraction: expected the key absent (or 0), found {value!r}")

    def __post_init__(self) -> None:
        _coerce(self)
        c = "DataConfig"
        _check(self.dataset_dir.strip() != "", c, "dataset_dir", "a non-empty path", self.dataset_dir)
        _check(len(self.proprio_keys) > 0, c, "proprio_keys", "at least one key", self.proprio_keys)
        for k in self.proprio_keys:
            _check(
                k in PROPRIO_KEY_DIMS,
                c,
                "proprio_keys",
                f"keys among {list(PROPRIO_KEY_DIMS)}",
                self.proprio_keys,
            )
        _check(
            len(set(self.proprio_keys)) == len(self.proprio_keys),
            c,
            "proprio_keys",
            "unique keys",
            self.proprio_keys,
        )
        _check(len(self.camera_names) > 0, c, "camera_names", "at least one camera", self.camera_names)
        _check(
            0 <= self.random_shift_pad <= 32,
            c,
            "random_shift_pad",
            "an int in [0, 32]",
            self.random_shift_pad,
        )

    @property
    def proprio_dim(self) -> int:
        """Sum of the widths of `proprio_keys` (per frame)."""
        return sum(PROPRIO_KEY_DIMS[k] for k in self.proprio_keys)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(_ConfigMixin):
    """Everything a training run needs; cross-checks the sub-configs against each other."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    meanflow: MeanFlowConfig = field(default_factory=MeanFlowConfig)
    dispersive: DispersiveConfig = field(default_factory=DispersiveConfig)
    objective: str = "meanflow"
    sample_steps_eval: int = 1
    batch_size: int = 256
    steps: int = 20000
    lr: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    min_lr: float = 1e-5
    ema_decay: float = 0.995
    ema_every: int = 10
    ema_start_step: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 42
    device: str = "auto"
    out_dir: str = "runs/dm1"
    num_threads: int = 0  # 0 = torch default
    #: Fine-tuning: a checkpoint (or run directory) whose EMA weights and normalizers start this run at step 0
    #: (fresh optimizer and schedule); "" = train from scratch. Its model config must equal ``model``.
    init_from: str = ""

    def save(self, path: str | Path) -> None:
        """Write this config as YAML (see `save_train_config`)."""
        save_train_config(self, path)

    def __post_init__(self) -> None:
        _coerce(self)
        c = "TrainConfig"
        _check(self.objective in OBJECTIVES, c, "objective", f"one of {OBJECTIVES}", self.objective)
        for name in (
            "sample_steps_eval",
            "batch_size",
            "steps",
            "ema_every",
            "checkpoint_every",
            "log_every",
        ):
            _check(getattr(self, name) >= 1, c, name, "an int >= 1", getattr(self, name))
        for name in ("warmup_steps", "ema_start_step"):
            _check(getattr(self, name) >= 0, c, name, "an int >= 0", getattr(self, name))
        _check(
            0 <= self.num_threads <= MAX_THREADS,
            c,
            "num_threads",
            f"an int in [0, {MAX_THREADS}] (0 = torch's default)",
            self.num_threads,
        )
        _check(0 <= self.seed <= MAX_SEED, c, "seed", f"an int in [0, 2**63 - 1 = {MAX_SEED}]", self.seed)
        _check(
            self.warmup_steps <= self.steps, c, "warmup_steps", f"<= steps={self.steps}", self.warmup_steps
        )
        _check(self.lr > 0.0, c, "lr", "a float > 0", self.lr)
        _check(0.0 <= self.min_lr <= self.lr, c, "min_lr", f"a float in [0, lr={self.lr}]", self.min_lr)
        _check(self.weight_decay >= 0.0, c, "weight_decay", "a float >= 0", self.weight_decay)
        _check(0.0 <= self.ema_decay < 1.0, c, "ema_decay", "a float in [0, 1)", self.ema_decay)
        _check(
            bool(_DEVICE_RE.match(self.device)), c, "device", "auto, cpu, mps, cuda or cuda:<n>", self.device
        )
        _check(self.out_dir.strip() != "", c, "out_dir", "a non-empty path", self.out_dir)
        _check(
            self.data.camera_names == self.model.camera_names,
            c,
            "data.camera_names",
            f"the same cameras as model.camera_names={list(self.model.camera_names)}",
            list(self.data.camera_names),
        )
        _check(
            self.data.proprio_dim == self.model.proprio_dim,
            c,
            "model.proprio_dim",
            f"{self.data.proprio_dim} (the width of data.proprio_keys={list(self.data.proprio_keys)})",
            self.model.proprio_dim,
        )
        for t in self.dispersive.targets:
            if t.startswith("mlp."):
                _check(
                    int(t[4:]) <= self.model.mlp_blocks,
                    c,
                    "dispersive.targets",
                    f"mlp.<i> with i <= model.mlp_blocks={self.model.mlp_blocks}",
                    list(self.dispersive.targets),
                )


def _unique_key_loader() -> type:
    """A `yaml.SafeLoader` that refuses a key repeated in one mapping (PyYAML keeps the last silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: dict[Any, int] = {}  # key -> line of its first occurrence
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:  # also on one line: `{x: 1, x: 2}`
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (line {first} and line {line})",
                        key_node.start_mark,
                    )
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a YAML training config (nested mappings); errors name the file and the offending key.

    A key repeated in one mapping is refused (YAML would silently keep the last value).
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ValueError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: expected a YAML file, found a directory") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {exc}") from None
    data = raw.get("data") if isinstance(raw, dict) else None
    if isinstance(data, dict) and data.get("val_fraction", 0) not in (0, 0.0):
        raise ValueError(
            f"{path}: data.val_fraction: expected the key absent (or 0): dm1 train has no validation split "
            "(hold out episodes in another directory and evaluate with `dm1 eval`), "
            f"found {data['val_fraction']!r}"
        )
    try:
        return TrainConfig.from_dict({} if raw is None else raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


load_yaml_config = load_train_config  # name used in docs/architecture.md


def save_train_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write `cfg` as YAML that `load_train_config` reads back to an equal config."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
