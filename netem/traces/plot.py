"""Plot of a trace for `testbed trace inspect --plot`: capacity and delay with the 15 s grid.

Owns the figure only (matplotlib, Agg backend, no display needed).
"""

from __future__ import annotations

from pathlib import Path

from netem.traces.model import Trace
from netem.traces.summary import CAPACITY_STEP_NS


def plot_trace(trace: Trace, path: str | Path, boundaries_s: dict[str, list[float]],
               title: str = "") -> Path:
    """Write a PNG: per direction, per-100 ms capacity and delay, slot boundaries as lines.

    boundaries_s: per direction, the 15 s grid to mark (from the summary's slot phase).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(d, q) for d in trace.directions for q in ("rate_bps", "delay_us")
            if getattr(trace.direction(d), q) is not None]
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 2.6 * len(rows)), sharex=True,
                             squeeze=False)
    for ax, (direction, quantity) in zip(axes[:, 0], rows, strict=True):
        series = trace.direction(direction)
        if quantity == "rate_bps":
            s = series.resample(CAPACITY_STEP_NS)
            ax.step(s.t_ns / 1e9, s.rate_bps / 1e6, where="post", lw=0.8)  # type: ignore[operator]
            ax.set_ylabel(f"{direction} capacity\n(Mbit/s, 100 ms)")
        else:
            ax.step(series.t_ns / 1e9, series.delay_us / 1e3, where="post", lw=0.6,  # type: ignore[operator]
                    color="tab:orange")
            ax.set_ylabel(f"{direction} delay (ms)")
        for i, b in enumerate(boundaries_s.get(direction, [])):
            ax.axvline(b, color="tab:red", ls="--", lw=0.8, label="15 s slot boundary"
                       if i == 0 else None)
        ax.grid(alpha=0.3)
    if any(boundaries_s.values()):
        axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time since trace start (s)")
    axes[-1, 0].set_xlim(0, trace.duration_s)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


__all__ = ["plot_trace"]
