"""onnxruntime policy runtime: loads only verified ONNX + card, validates every input and output, no torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dm1.modelcard import ActionSpec, CameraSpec, ModelCard, ProprioSpec
from dm1.runtime import InputError, ModelLoadError, OutputError, PolicyRuntime

H, W, P, TA, DA = 24, 32, 4, 3, 4


class ToyPolicy(torch.nn.Module):
    """Tiny stand-in with the contract's ONNX I/O; `sqrt(proprio[0])` makes NaN reachable from the input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(6 + P, TA * DA)

    def forward(self, image_front, image_wrist, proprio, noise):  # (1,H,W,3) u8 x2, (1,P), (1,Ta,Da)
        f = image_front.float().mean(dim=(1, 2)) / 255.0  # (1, 3)
        w = image_wrist.float().mean(dim=(1, 2)) / 255.0  # (1, 3)
        x = torch.cat([f, w, proprio], dim=-1)  # (1, 6+P)
        gate = torch.sqrt(proprio[:, :1]).unsqueeze(-1)  # (1, 1, 1), NaN for negative proprio[0]
        return noise * gate + self.lin(x).view(1, TA, DA)


def toy_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = {n: rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for n in ("front", "wrist")}
    proprio = rng.uniform(0.1, 1.0, P).astype(np.float32)
    noise = rng.standard_normal((TA, DA)).astype(np.float32)
    return images, proprio, noise


def toy_card(onnx_sha256: str, image_shape=(H, W, 3)) -> ModelCard:
    return ModelCard(
        name="toy",
        cameras=[CameraSpec("front", image_shape), CameraSpec("wrist", (H, W, 3))],
        proprio=ProprioSpec(keys=["ee_pos", "gripper_width"], dims=[3, 1], units=["m", "m"]),
        noise_shape=(TA, DA),
        action=ActionSpec(
            "ee_position",
            ["x", "y", "z", "gripper"],
            ["m", "m", "m", "1"],
            "fr3_link0",
            TA,
            10.0,
            [1.0, 0.0, 0.0, 0.0],
        ),
        onnx_sha256=onnx_sha256,
        parameters=sum(p.numel() for p in ToyPolicy().parameters()),
    )


@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy_model")
    images, proprio, noise = toy_inputs()
    args = (
        torch.from_numpy(images["front"])[None],
        torch.from_numpy(images["wrist"])[None],
        torch.from_numpy(proprio)[None],
        torch.from_numpy(noise)[None],
    )
    torch.onnx.export(
        ToyPolicy().eval(),
        args,
        str(out / "model.onnx"),
        dynamo=False,
        opset_version=18,
        input_names=["image_front", "image_wrist", "proprio", "noise"],
        output_names=["actions"],
    )
    toy_card(hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()).save(out)
    return out


def copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_runtime_output_matches_torch_module(toy_model_dir: Path) -> None:
    rt = PolicyRuntime.load(toy_model_dir, num_threads=1)
    rt.warmup(2)
    images, proprio, noise = toy_inputs(seed=3)
    actions = rt.predict(images, proprio, noise)
    with torch.no_grad():
        ref = ToyPolicy()(
            torch.from_numpy(images["front"])[None],
            torch.from_numpy(images["wrist"])[None],
            torch.from_numpy(proprio)[None],
            torch.from_numpy(noise)[None],
        )[0].numpy()
    assert actions.shape == (TA, DA) and actions.dtype == np.float32
    assert np.max(np.abs(actions - ref)) <= 1e-5
    assert rt.providers[-1] == "CPUExecutionProvider"


def test_seeded_rng_gives_reproducible_chunks(toy_model_dir: Path) -> None:
    rt = PolicyRuntime.load(toy_model_dir, num_threads=1)
    images, proprio, _ = toy_inputs()
    a = rt.predict(images, proprio, rng=np.random.default_rng(7))
    b = rt.predict(images, proprio, rng=np.random.default_rng(7))
    c = rt.predict(images, proprio, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (
            lambda i, p, n: i.pop("wrist"),
            r"images: expected cameras \['front', 'wrist'\].*missing \['wrist'\]",
        ),
        (lambda i, p, n: i.update(side=i["front"]), r"unexpected \['side'\]"),
        (
            lambda i, p, n: i.update(front=i["front"][:, :-1]),
            r"images\['front'\]: expected shape \(24, 32, 3\)",
        ),
        (
            lambda i, p, n: i.update(front=i["front"].astype(np.float32)),
            r"images\['front'\]: expected dtype uint8",
        ),
        (lambda i, p, n: p.__setitem__(1, np.nan), r"proprio: expected finite values.*indices \[1\]"),
        (lambda i, p, n: p.__setitem__(0, np.inf), r"proprio: expected finite"),
        (lambda i, p, n: n.__setitem__((0, 0), np.nan), r"noise: expected finite"),
    ],
)
def test_bad_observation_raises_input_error_naming_field(toy_model_dir: Path, mutate, pattern: str) -> None:
    rt = PolicyRuntime.load(toy_model_dir, num_threads=1)
    images, proprio, noise = toy_inputs()
    mutate(images, proprio, noise)
    with pytest.raises(InputError, match=pattern):
        rt.predict(images, proprio, noise)


def test_wrong_proprio_shape_and_dtype_are_refused(toy_model_dir: Path) -> None:
    rt = PolicyRuntime.load(toy_model_dir, num_threads=1)
    images, proprio, noise = toy_inputs()
    with pytest.raises(InputError, match=r"proprio: expected shape \(4,\), found \(5,\)"):
        rt.predict(images, np.zeros(5, np.float32), noise)
    with pytest.raises(InputError, match="proprio: expected dtype float32.*found int64"):
        rt.predict(images, np.zeros(4, np.int64), noise)
    with pytest.raises(InputError, match=r"noise: expected shape \(3, 4\), found \(4, 4\)"):
        rt.predict(images, proprio, np.zeros((4, 4), np.float32))


def test_non_finite_network_output_is_refused(toy_model_dir: Path) -> None:
    rt = PolicyRuntime.load(toy_model_dir, num_threads=1)
    images, proprio, noise = toy_inputs()
    proprio[0] = -1.0  # sqrt(-1) = NaN inside the graph
    with pytest.raises(OutputError, match="actions: expected finite values"):
        rt.predict(images, proprio, noise)


def test_pickle_file_is_refused(tmp_path: Path, toy_model_dir: Path) -> None:
    pt = tmp_path / "policy.pt"
    pt.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelLoadError, match=r"policy\.pt: refusing to load a pickle"):
        PolicyRuntime.load(pt)
    model = copy_model(toy_model_dir, tmp_path / "with_pickle")
    (model / "model.ckpt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelLoadError, match=r"containing pickle-format files \['model.ckpt'\]"):
        PolicyRuntime.load(model)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.BIN"])
def test_pytorch_bin_weights_are_refused_as_pickles(tmp_path: Path, toy_model_dir: Path, name: str) -> None:
    """`.bin` (torch.save's usual suffix for weights) is a pickle to checkpoint loading, so to the runtime."""
    weights = tmp_path / name
    weights.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelLoadError, match=rf"{name}: refusing to load a pickle"):
        PolicyRuntime.load(weights)
    model = copy_model(toy_model_dir, tmp_path / "with_bin")
    (model / name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelLoadError, match=rf"containing pickle-format files \['{name}'\]"):
        PolicyRuntime.load(model)


def test_truncated_onnx_is_refused(tmp_path: Path, toy_model_dir: Path) -> None:
    model = copy_model(toy_model_dir, tmp_path / "m")
    onnx_path = model / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="SHA-256 mismatch"):
        PolicyRuntime.load(model)
    # Even with a card re-hashed to the truncated bytes, the graph itself does not load.
    card = json.loads((model / "model_card.json").read_text())
    card["onnx_sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (model / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"model\.onnx: onnxruntime cannot load the graph"):
        PolicyRuntime.load(model)


def test_card_hash_mismatch_is_refused(tmp_path: Path, toy_model_dir: Path) -> None:
    model = copy_model(toy_model_dir, tmp_path / "m")
    card = json.loads((model / "model_card.json").read_text())
    card["onnx_sha256"] = "f" * 64
    (model / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"onnx_sha256' expects f{64}, found [0-9a-f]{64}"):
        PolicyRuntime.load(model)


def test_card_shape_that_disagrees_with_graph_is_refused(tmp_path: Path, toy_model_dir: Path) -> None:
    model = copy_model(toy_model_dir, tmp_path / "m")
    digest = hashlib.sha256((model / "model.onnx").read_bytes()).hexdigest()
    toy_card(digest, image_shape=(48, 32, 3)).save(model)
    with pytest.raises(
        ModelLoadError,
        match=r"input 'image_front' shape: card expects \[1, 48, 32, 3\], "
        r"ONNX has \[1, 24, 32, 3\]",
    ):
        PolicyRuntime.load(model)


def test_missing_model_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="expected a model directory"):
        PolicyRuntime.load(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match=r"model\.onnx: missing"):
        PolicyRuntime.load(tmp_path)


def test_runtime_imports_and_runs_without_torch(toy_model_dir: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from dm1.runtime import PolicyRuntime\n"
        f"rt = PolicyRuntime.load({str(toy_model_dir)!r}, num_threads=1)\n"
        f"imgs = {{n: np.zeros(({H}, {W}, 3), np.uint8) for n in ('front', 'wrist')}}\n"
        f"a = rt.predict(imgs, np.full({P}, 0.5, np.float32))\n"
        "assert a.shape == (3, 4), a.shape\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_session_options_are_tuned_for_batch_one_latency() -> None:
    import onnxruntime as ort
    from dm1.runtime import SPIN_DURATION_US, session_options

    so = session_options(2)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (2, 1)
    # Default "run": idle workers spin (bounded) between the operators of one run, and stop when it returns.
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert so.get_session_config_entry("session.intra_op.spin_duration_us") == str(SPIN_DURATION_US)
    assert so.get_session_config_entry("session.force_spinning_stop") == "1"
    never = session_options(1, spinning="never")
    assert never.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    off = session_options(1, spinning=False)  # the former boolean API still means "never"
    assert off.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    always = session_options(1, spinning="always")
    assert always.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # onnxruntime's default: unset
        always.get_session_config_entry("session.force_spinning_stop")
    with pytest.raises(ModelLoadError, match=r"spinning: expected one of \['run', 'always', 'never'\]"):
        session_options(1, spinning="sometimes")
    with pytest.raises(ModelLoadError, match="num_threads: expected >= 1, found 0"):
        session_options(0)


def test_runtime_session_gets_the_tuned_options(toy_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dm1.runtime as runtime

    created: list[dict] = []
    real = runtime.ort.InferenceSession

    def spy(*args, **kwargs):
        created.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime.ort, "InferenceSession", spy)
    rt = PolicyRuntime.load(toy_model_dir, num_threads=1)
    (kwargs,) = created
    assert kwargs["sess_options"].intra_op_num_threads == 1
    assert kwargs["disabled_optimizers"] == ["SkipLayerNormFusion"]
    assert rt.predict(*toy_inputs()).shape == (TA, DA)
