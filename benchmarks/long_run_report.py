"""The long-run benchmark's table (markdown) and plot (PNG) from its ``long_run.json``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: (key, column title, format) of the per-window metrics shown over time.
PLOTTED = (("identity_error", "ID err ↓", "{:.3f}"), ("fid", "FID* ↓", "{:.1f}"),
           ("sync_distance", "Sync-D ↓", "{:.3f}"), ("mouth_open_corr", "open r ↑", "{:.2f}"),
           ("jitter", "jitter ↓", "{:.2f}"), ("drift", "drift ↓", "{:.2f}"), ("head_sway", "head sway", "{:.2f}"))


def to_markdown(results: dict[str, Any]) -> str:
    spec = results["spec"]
    window_s = spec["window_frames"] / spec["fps"]
    lines = [f"## Long runs: unseen identities of the synthetic world (seed {spec['seed']}), per {window_s:g} s window",
             "",
             "Speech in turns with silent stretches (`train.synthetic.sequence`). *first → last*: the first and last "
             "window (60 s set) or minute (10-minute set); FID* of a window pools the set's sequences. *drift*: mean "
             "|window mean frame − first window mean frame| outside the mouth, in 8-bit levels. *head sway*: std of the "
             "head's estimated offset in the window (pixels). Slopes are per minute "
             "over all windows. *silence*: the estimated mouth openness in silent stretches (mean / 95th percentile; "
             "0 = shut, talking ~0.3–0.8) and their jitter.", ""]
    for set_name, info in spec["sets"].items():
        truth = results["ground_truth"].get(set_name)
        rows = [r for r in results["rows"] if set_name in r["sets"]]
        if truth is None or not rows:
            continue
        n, secs = len(info["indices"]), info["seconds"]
        lines += [f"### {n} sequences of {secs / 60:g} min" if secs >= 120 else f"### {n} sequences of {secs:g} s", "",
                  "| method | NFE | ID err | FID* | Sync-D | open r | jitter | head sway | drift, last | drift / min "
                  "| ID err / min | FID* / min | silence open | silence jitter |",
                  "|---|---:|---|---|---|---|---|---|---:|---:|---:|---:|---|---:|"]
        for name, nfe, s in [("ground truth", "–", truth)] + [(r["name"], str(r["nfe"]), r["sets"][set_name]) for r in rows]:
            cells = [_arrow(s, k, f) for k, f in (("identity_error", "{:.3f}"), ("fid", "{:.1f}"),
                                                    ("sync_distance", "{:.3f}"), ("mouth_open_corr", "{:.2f}"),
                                                    ("jitter", "{:.2f}"), ("head_sway", "{:.2f}"))]
            slopes = s["slope_per_minute"]
            sil = s["silence"]
            lines.append(f"| {name} | {nfe} | " + " | ".join(cells) + f" | {_f(s['drift_last_window'], '{:.2f}')} | "
                         f"{_f(slopes['drift'], '{:+.2f}')} | {_f(slopes['identity_error'], '{:+.4f}')} | "
                         f"{_f(slopes['fid'], '{:+.2f}')} | {_f(sil['silence_open'], '{:.2f}')} / "
                         f"{_f(sil['silence_open_p95'], '{:.2f}')} | {_f(sil['silence_jitter'], '{:.2f}')} |")
        lines.append("")
    return "\n".join(lines)


def _arrow(summary: dict[str, Any], key: str, fmt: str) -> str:
    return f"{_f(summary['first'].get(key), fmt)} → {_f(summary['last'].get(key), fmt)}"  # rows before a metric: —


def _f(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)


def plot_rows(results: dict[str, Any], path: Path) -> Path:
    """Each plotted metric over time (minutes): one line per row, the ground truth dashed; one row of
    panels per sequence set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [s for s in results["spec"]["sets"] if s in results["ground_truth"]]
    fig, axes = plt.subplots(len(sets), len(PLOTTED), figsize=(3.2 * len(PLOTTED), 2.8 * len(sets)), squeeze=False)
    for i, set_name in enumerate(sets):
        series = [("ground truth", results["ground_truth"][set_name], {"color": "black", "ls": "--"})]
        series += [(r["name"], r["sets"][set_name], {}) for r in results["rows"] if set_name in r["sets"]]
        for j, (key, title, _) in enumerate(PLOTTED):
            ax = axes[i][j]
            for name, summary, style in series:
                w = summary["windows"]
                ax.plot([x["minutes"] for x in w], [x.get(key, math.nan) for x in w], label=name, lw=1.2, **style)
            ax.set_title(f"{title} ({set_name})", fontsize=9)
            ax.set_xlabel("minutes", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
