"""Training curves from ``metrics.csv`` to ``loss.png`` (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import csv
from pathlib import Path


def _column(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key, "")
        if v not in ("", None):
            xs.append(float(r["step"]))
            ys.append(float(v))
    return xs, ys


def plot_metrics(csv_path: str | Path, out_png: str | Path) -> Path:
    """Plot L_MF (log), L_disp, ||grad L_disp|| on the encoder and the learning rate against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path, out_png = Path(csv_path), Path(out_png)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path}: no metric rows to plot")
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    panels = [
        ("loss_mf", "L_MF (objective)", True),
        ("loss_disp", "L_disp (dispersive term)", False),
        ("grad_disp_enc", "||grad L_disp|| on obs encoder", True),
        ("lr", "learning rate", False),
    ]
    for ax, (key, title, log) in zip(axes.flat, panels, strict=True):
        xs, ys = _column(rows, key)
        if xs:
            ax.plot(xs, ys, marker="." if len(xs) < 50 else None)
            if log and all(y > 0 for y in ys):
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_metrics_if_any(csv_path: str | Path, out_png: str | Path) -> Path | None:
    """`plot_metrics`, or None (no plot written) while ``csv_path`` is missing or has no metric row yet."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        return None
    with open(csv_path, newline="") as f:
        if next(csv.DictReader(f), None) is None:
            return None
    return plot_metrics(csv_path, out_png)
