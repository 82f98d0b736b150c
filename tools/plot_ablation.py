#!/usr/bin/env python3
"""Plots an ablation made by `ablate` (docs/ablations.md).

    /usr/bin/python3 tools/plot_ablation.py runs/ablate-gpt_tiny [--ema W] [--out DIR]

Reads <dir>/ablation.json (the runs in grid order, written by ablate; without it every
sub-directory holding a metrics.jsonl is a run) and each run's metrics.jsonl, and writes into
<dir>/plots (or --out):

    <metric>_vs_step.png, <metric>_vs_tokens.png   for loss, ce_loss, z_loss, lse_mean, lse_max
    combined_vs_step.png, combined_vs_tokens.png   all five plus val_loss in one figure
    final_loss_vs_lr.png                           when the grid sweeps optim.lr (ablate wrote
                                                   lr_sensitivity.json): final loss against the
                                                   learning rate, one line per setting, and the
                                                   training loss of the diverged runs
    signals_diverged.png                           when some run diverged (its ablate.diverged
                                                   marker, or lr_sensitivity.json says so): the
                                                   instability signals of the log steps
                                                   (logits_absmax, logits_std, attn_score_max,
                                                   grad_norm/<group>, update_ratio/<group>)
                                                   against step, the diverged runs in colour,
                                                   the others thin and grey

--only NAME[,NAME...] writes only the named figures (file names without .png).

Every run of the ablation is drawn on the same axes: the raw series thin and faint, an
exponential moving average (debiased, weight W on the previous value) on top, val_loss as
points. By default W = 1 - 50/n for the longest run's n logged steps (a time constant of 2%
of the run; no smoothing below 50 records), so short and long runs both read well. Runs of one setting share a colour; seeds differ by line style. The y-axis of
loss and ce_loss is zoomed to the range of the smoothed curves after the first 10% of each
run (the first steps start near log(vocab) and would flatten the curves that matter); raw
spikes above it are clipped (summary.md counts them). The z-loss part is on a log scale (it
scales with the weight; z = 0 runs have none and do not show there).

Exit status: 0 plots written, 2 bad input (no runs, unreadable metrics), 3 matplotlib
missing (on Debian: apt-get install python3-matplotlib).
"""
import argparse
import json
import math
import os
import sys

METRICS = [
    ("loss", "training loss"),
    ("ce_loss", "cross-entropy part"),
    ("z_loss", "z-loss part"),
    ("lse_mean", "mean log-sum-exp"),
    ("lse_max", "max log-sum-exp"),
]
X_AXES = [("step", "step"), ("tokens", "tokens")]
ZOOMED = {"loss", "ce_loss", "val_loss"}
LINE_STYLES = ["-", "--", ":", "-."]


def as_float(value):
    """JSON number -> float; null (how the trainer writes NaN/inf) or a missing key -> nan."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def append_in_step_order(series, record):
    """A resumed run logs some steps again: a repeated or earlier step replaces the tail."""
    while series and series[-1]["step"] >= record["step"]:
        series.pop()
    series.append(record)


def read_metrics(path):
    """(step records, eval records) of one metrics.jsonl, by the same rules as ablate."""
    steps, evals = [], []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    # The text after the last newline is a line cut short by a kill mid-write (or empty).
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"{path}:{index + 1}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if index == len(lines) - 1:
                break
            raise ValueError(f"{where}: not a JSON object")
        if not isinstance(record, dict):
            raise ValueError(f"{where}: not a JSON object")
        if "loss" not in record and "val_loss" not in record:
            continue  # other records (run info) are not series
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"{where}: a record with loss or val_loss needs an integer step")
        if "loss" in record:
            r = {"step": record["step"], "tokens": as_float(record.get("tokens"))}
            for name, _ in METRICS:
                r[name] = as_float(record.get(name))
            for key in record:  # the instability signals, on log steps only
                if any(key == k or (k.endswith("/") and key.startswith(k)) for k, _ in SIGNALS):
                    r[key] = as_float(record[key])
            append_in_step_order(steps, r)
        if "val_loss" in record:
            append_in_step_order(evals, {"step": record["step"], "tokens": as_float(record.get("tokens")),
                                         "val_loss": as_float(record.get("val_loss"))})
    # Evaluation records without tokens: take them from the step record of the same step.
    tokens_at = {r["step"]: r["tokens"] for r in steps}
    for e in evals:
        if math.isnan(e["tokens"]):
            e["tokens"] = tokens_at.get(e["step"], math.nan)
    return steps, evals


def load_runs(ablation_dir):
    """[(name, label, setting, seed, steps, evals)] in grid order."""
    manifest_path = os.path.join(ablation_dir, "ablation.json")
    entries = []
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        for run in manifest.get("runs", []):
            setting = " ".join(f"{k}={v}" for k, v in run.get("values", {}).items())
            entries.append((run["name"], run.get("label", run["name"]), setting, int(run.get("seed", 0))))
    else:
        for name in sorted(os.listdir(ablation_dir)):
            if os.path.exists(os.path.join(ablation_dir, name, "metrics.jsonl")):
                entries.append((name, name, name, 0))
    runs = []
    for name, label, setting, seed in entries:
        path = os.path.join(ablation_dir, name, "metrics.jsonl")
        if not os.path.exists(path):
            continue  # not run yet
        steps, evals = read_metrics(path)
        if steps or evals:
            runs.append((name, label, setting, seed, steps, evals))
    return runs


def ema(values, weight):
    """Debiased exponential moving average; non-finite inputs give gaps and are skipped."""
    out, mean, norm = [], 0.0, 0.0
    for v in values:
        if math.isfinite(v):
            mean = weight * mean + (1 - weight) * v
            norm = weight * norm + (1 - weight)
            out.append(mean / norm)
        else:
            out.append(math.nan)
    return out


def zoom_limits(runs, metric, smooth):
    """y-limits covering each run after its first 10% of records: the top follows the
    smoothed curves (one raw spike must not flatten them all), the bottom the raw values."""
    low, high = math.inf, -math.inf
    for _, _, _, _, steps, evals in runs:
        if metric == "val_loss":
            raw = [e["val_loss"] for e in evals]
            top = raw
        else:
            raw = [r[metric] for r in steps]
            top = smooth(raw)
        start = len(raw) // 10
        low = min([low] + [v for v in raw[start:] if math.isfinite(v)])
        high = max([high] + [v for v in top[start:] if math.isfinite(v)])
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return None
    margin = 0.05 * (high - low)
    return low - margin, high + margin


def plot_lr_sensitivity(plt, ablation_dir, out, name):
    """final_loss_vs_lr.png from lr_sensitivity.json (written by ablate): per setting, the
    seed-mean final loss against the learning rate on a log axis (diverged points as x, the
    setting's loss at initialisation dotted); beside it the training loss of each diverged run
    against step. Returns the path, or None without lr_sensitivity.json."""
    path = os.path.join(ablation_dir, "lr_sensitivity.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    diverged = [r for r in data.get("runs", []) if r.get("diverged")]
    fig, axes = plt.subplots(1, 2 if diverged else 1, figsize=(11 if diverged else 6.5, 4.5), squeeze=False)
    ax = axes[0][0]
    cmap = plt.get_cmap("tab10")
    for i, setting in enumerate(data.get("settings", [])):
        colour = cmap(i % 10)
        points = setting.get("points", [])
        xs = [as_float(p.get("lr_value")) for p in points]
        ys = [as_float(p.get("loss")) for p in points]
        ax.plot(xs, ys, color=colour, marker="o", markersize=4, linewidth=1.4, label=setting.get("label", ""))
        bad = [(x, y) for x, y, p in zip(xs, ys, points) if p.get("diverged", 0) > 0 and math.isfinite(y)]
        if bad:
            ax.scatter([b[0] for b in bad], [b[1] for b in bad], color=colour, marker="x", s=60, zorder=3)
        init = as_float(setting.get("init_loss"))
        if math.isfinite(init):
            ax.axhline(init, color=colour, linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(data.get("lr_key", "optim.lr"))
    ax.set_ylabel("final loss (seed mean; diverged = loss at init)")
    ax.set_title(f"{name}: final loss vs learning rate (x: diverged, dotted: init)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if diverged:
        ax = axes[0][1]
        for run in diverged:
            metrics = os.path.join(ablation_dir, run["name"], "metrics.jsonl")
            if not os.path.exists(metrics):
                continue
            steps, _ = read_metrics(metrics)
            xs = [r["step"] for r in steps]
            ys = [r["loss"] if math.isfinite(r["loss"]) else math.nan for r in steps]
            line, = ax.plot(xs, ys, linewidth=1.0, label=run.get("label", run["name"]))
            finite = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
            if finite and len(finite) < len(xs):  # where it went non-finite
                ax.scatter([finite[-1][0]], [finite[-1][1]], color=line.get_color(), marker="x", s=50)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title("diverged runs (x: last finite loss)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    target = os.path.join(out, "final_loss_vs_lr.png")
    fig.savefig(target, dpi=90)
    plt.close(fig)
    return target


SIGNALS = [
    ("logits_absmax", "max |logit|"),
    ("logits_std", "logit std"),
    ("attn_score_max", "max attention score"),
    ("grad_norm/", "gradient norm per group"),
    ("update_ratio/", "update / weight norm per group"),
]
GROUP_STYLES = {"embedding": "-", "attention": "--", "mlp": ":", "norm": "-.", "head": (0, (5, 1, 1, 1))}


def diverged_runs(ablation_dir, runs):
    """Names of the runs that diverged: ablate's marker in the run folder, or the
    learning-rate table's verdict (a final loss above the loss at initialisation)."""
    names = {run[0] for run in runs if os.path.exists(os.path.join(ablation_dir, run[0], "ablate.diverged"))}
    path = os.path.join(ablation_dir, "lr_sensitivity.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            names |= {r["name"] for r in json.load(f).get("runs", []) if r.get("diverged")}
    return names


def plot_signals(plt, ablation_dir, runs, out, name):
    """signals_diverged.png: each instability signal against step (log scale), the diverged
    runs in colour over the others in grey; per-group signals one line style per group.
    Returns the path, or None when no run diverged or no run logged signals."""
    bad = diverged_runs(ablation_dir, runs)
    if not bad or not any("logits_absmax" in r for run in runs for r in run[4]):
        return None
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    cmap = plt.get_cmap("tab10")
    colour = {run[0]: cmap(i % 10) for i, run in enumerate(r for r in runs if r[0] in bad)}
    for ax, (key, title) in zip(axes.flat, SIGNALS):
        for run in sorted(runs, key=lambda r: r[0] in bad):  # diverged ones drawn last, on top
            fields = sorted({k for r in run[4] for k in r if k == key or (key.endswith("/") and k.startswith(key))})
            for field in fields:
                points = [(r["step"], as_float(r.get(field))) for r in run[4] if field in r]
                xs = [p[0] for p in points]
                ys = [abs(p[1]) if math.isfinite(p[1]) and p[1] != 0 else math.nan for p in points]
                group = field[len(key):] if key.endswith("/") else ""
                style = GROUP_STYLES.get(group, "-")
                if run[0] in bad:
                    ax.plot(xs, ys, color=colour[run[0]], linestyle=style, linewidth=1.3,
                            label=f"{run[1]} {group}".strip() if group or ax is axes.flat[0] else None)
                else:
                    ax.plot(xs, ys, color="0.7", linestyle=style, linewidth=0.7)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    axes.flat[-1].axis("off")
    fig.suptitle(f"{name}: instability signals of the diverged runs (grey: the others)", fontsize=10)
    fig.tight_layout()
    target = os.path.join(out, "signals_diverged.png")
    fig.savefig(target, dpi=80)
    plt.close(fig)
    return target


class Style:
    """Colour per setting (the swept values without the seed), line style per seed."""

    def __init__(self, runs, plt):
        settings = []
        for run in runs:
            if run[2] not in settings:
                settings.append(run[2])
        cmap = plt.get_cmap("tab10" if len(settings) <= 10 else "viridis")
        n = max(len(settings) - 1, 1)
        self.colour = {s: cmap(i if len(settings) <= 10 else i / n) for i, s in enumerate(settings)}

    def __call__(self, run):
        return self.colour[run[2]], LINE_STYLES[run[3] % len(LINE_STYLES)]


def draw(ax, runs, metric, x, weight, style, show_val):
    def smooth(values):
        return ema(values, weight)

    for run in runs:
        _, label, _, _, steps, evals = run
        colour, line = style(run)
        if metric == "val_loss":
            xs = [e[x] for e in evals]
            ys = [e["val_loss"] for e in evals]
            ax.plot(xs, ys, color=colour, linestyle=line, linewidth=0.8, marker="o", markersize=4, label=label)
            continue
        xs = [r[x] for r in steps]
        ys = [r[metric] for r in steps]
        ax.plot(xs, ys, color=colour, linestyle=line, linewidth=0.6, alpha=0.3)
        ax.plot(xs, smooth(ys), color=colour, linestyle=line, linewidth=1.6, label=label)
        if show_val and evals:
            ax.scatter([e[x] for e in evals], [e["val_loss"] for e in evals], color=colour, s=22,
                       edgecolors="black", linewidths=0.5, zorder=3)
    if metric in ZOOMED:
        limits = zoom_limits(runs, metric, smooth)
        if limits:
            ax.set_ylim(*limits)
    if metric == "z_loss" and any(r["z_loss"] > 0 for run in runs for r in run[4]):
        ax.set_yscale("log")  # the z-loss part scales with the weight: decades apart
    ax.set_xlabel(x)
    ax.grid(True, alpha=0.3)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ablation_dir")
    parser.add_argument("--out", help="output folder (default: ABLATION_DIR/plots)")
    parser.add_argument("--ema", type=float, default=None,
                        help="EMA weight of the previous value, in [0, 1) (default: 1 - 50/records)")
    parser.add_argument("--only", help="comma-separated figure names (without .png) to write; default all")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None

    def wanted(figure):
        return only is None or figure in only

    if args.ema is not None and not 0 <= args.ema < 1:
        print(f"plot_ablation: --ema must be in [0, 1), got {args.ema}", file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"plot_ablation: matplotlib is missing ({e}); on Debian: apt-get install python3-matplotlib",
              file=sys.stderr)
        return 3

    try:
        runs = load_runs(args.ablation_dir)
    except (OSError, ValueError) as e:
        print(f"plot_ablation: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"plot_ablation: no run with a metrics.jsonl under {args.ablation_dir}", file=sys.stderr)
        return 2
    if args.ema is None:
        longest = max(len(run[4]) for run in runs)
        args.ema = max(0.0, 1.0 - 50.0 / longest) if longest else 0.0
    out = args.out or os.path.join(args.ablation_dir, "plots")
    os.makedirs(out, exist_ok=True)
    style = Style(runs, plt)
    title_of = dict(METRICS + [("val_loss", "validation loss")])
    name = os.path.basename(os.path.normpath(args.ablation_dir))
    written = []

    if wanted("final_loss_vs_lr"):
        try:
            path = plot_lr_sensitivity(plt, args.ablation_dir, out, name)
        except (OSError, ValueError, KeyError) as e:
            print(f"plot_ablation: {e}", file=sys.stderr)
            return 2
        if path:
            written.append(path)

    if wanted("signals_diverged"):
        try:
            path = plot_signals(plt, args.ablation_dir, runs, out, name)
        except (OSError, ValueError, KeyError) as e:
            print(f"plot_ablation: {e}", file=sys.stderr)
            return 2
        if path:
            written.append(path)

    for x, _ in X_AXES:
        for metric, title in METRICS:
            if not wanted(f"{metric}_vs_{x}"):
                continue
            fig, ax = plt.subplots(figsize=(8, 5))
            draw(ax, runs, metric, x, args.ema, style, show_val=metric == "loss")
            ax.set_title(f"{name}: {title}" + (" (points: val_loss)" if metric == "loss" else ""))
            ax.set_ylabel(metric)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = os.path.join(out, f"{metric}_vs_{x}.png")
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)

        if not wanted(f"combined_vs_{x}"):
            continue
        fig, axes = plt.subplots(2, 3, figsize=(16, 9))
        for ax, metric in zip(axes.flat, [m for m, _ in METRICS] + ["val_loss"]):
            draw(ax, runs, metric, x, args.ema, style, show_val=metric == "loss")
            ax.set_title(title_of[metric])
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=9)
        fig.suptitle(f"{name} (thin: raw, thick: EMA {args.ema:.3g}, points: val_loss)")
        fig.tight_layout(rect=(0, 0.04 + 0.03 * ((len(labels) - 1) // 4), 1, 0.97))
        path = os.path.join(out, f"combined_vs_{x}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    print(f"plot_ablation: {len(written)} figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
