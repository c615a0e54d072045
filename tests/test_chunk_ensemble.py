"""Temporal ensembling of overlapping chunks (`dm1.policy.ensemble`) and its use in `PolicyStep`."""

from __future__ import annotations

import numpy as np
import pytest
from dm1.policy.ensemble import ChunkEnsembler
from dm1.policy.step import ActionChunk

DT = 0.05


def _chunk(t0: float, values: list[float], dims: int = 2) -> ActionChunk:
    acts = np.repeat(np.asarray(values, dtype=np.float32)[:, None], dims, axis=1)  # (N, dims)
    return ActionChunk(t0, DT, acts, 0, t0, "ee_position", tuple(f"a{i}" for i in range(dims)))


def test_off_returns_each_chunk_unchanged() -> None:
    ens = ChunkEnsembler(1.0)
    ens.blend(_chunk(0.0, [0, 0, 0, 0]))
    new = _chunk(DT, [1, 1, 1, 1])
    assert ens.blend(new) is new


def test_overlap_is_blended_and_new_instants_pass_through() -> None:
    ens = ChunkEnsembler(0.5)
    ens.blend(_chunk(0.0, [0, 0, 0, 0]))  # covers t = 0 .. 0.15
    out = ens.blend(_chunk(DT, [1, 1, 1, 1]))  # t = 0.05 .. 0.20
    np.testing.assert_allclose(out.actions[:, 0], [0.5, 0.5, 0.5, 1.0])
    assert out.t0 == DT and out.actions.shape == (4, 2)


def test_blend_is_recursive_over_the_published_chunks() -> None:
    ens = ChunkEnsembler(0.5)
    ens.blend(_chunk(0.0, [0, 0, 0, 0]))
    ens.blend(_chunk(DT, [1, 1, 1, 1]))  # published [0.5, 0.5, 0.5, 1]
    out = ens.blend(_chunk(2 * DT, [1, 1, 1, 1]))  # overlaps the published chunk, not the raw one
    np.testing.assert_allclose(out.actions[:, 0], [0.75, 0.75, 1.0, 1.0])


def test_previous_chunk_is_interpolated_between_its_points() -> None:
    ens = ChunkEnsembler(0.5)
    ens.blend(_chunk(0.0, [0, 2, 4, 6]))
    out = ens.blend(_chunk(DT / 2, [0, 0, 0, 0]))  # instants halfway between the previous points
    np.testing.assert_allclose(out.actions[:3, 0], [0.5, 1.5, 2.5])
    assert out.actions[3, 0] == 0.0  # beyond the previous chunk's last point


def test_reset_starts_afresh_and_a_gap_has_no_overlap() -> None:
    ens = ChunkEnsembler(0.5)
    ens.blend(_chunk(0.0, [0, 0, 0, 0]))
    ens.reset()
    np.testing.assert_allclose(ens.blend(_chunk(DT, [1, 1, 1, 1])).actions, 1.0)
    out = ens.blend(_chunk(1.0, [3, 3, 3, 3]))  # long after the previous chunk ended
    np.testing.assert_allclose(out.actions, 3.0)


def test_ensembling_reduces_the_jump_between_noisy_replans() -> None:
    rng = np.random.default_rng(0)
    jumps = {}
    for alpha in (1.0, 0.5):
        ens, prev, diffs = ChunkEnsembler(alpha), None, []
        for k in range(200):
            t0 = k * DT
            ramp = t0 + DT * np.arange(4)  # the true plan at the chunk's instants
            out = ens.blend(_chunk(t0, list(ramp + rng.normal(0, 0.02, 4))))  # + sampler noise
            if prev is not None:  # target at this instant: new chunk vs the previous one
                diffs.append(abs(out.actions[0, 0] - np.interp(t0, prev.times, prev.actions[:, 0])))
            prev = out
        jumps[alpha] = float(np.mean(diffs))
    assert jumps[0.5] < 0.7 * jumps[1.0], jumps


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, float("nan")])
def test_bad_alpha_is_rejected_with_its_name(alpha: float) -> None:
    with pytest.raises(ValueError, match="ChunkEnsembler.alpha"):
        ChunkEnsembler(alpha)
