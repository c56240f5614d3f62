"""Turns collected results into ``results.md`` (leaderboard first), ``results.csv`` and PNG plots."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nnunetv2_imnet.benchmark.collect import Collected, cost_per_job  # noqa: E402
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec  # noqa: E402
from nnunetv2_imnet.benchmark.stats import msd_ranking, paired_comparison  # noqa: E402

METRICS = ("dice", "nsd")


def write_report(spec: BenchmarkSpec, collected: Collected, out_dir: Path, command: str,
                 timings: Optional[Dict[str, float]] = None, versions: Optional[Dict[str, str]] = None) -> Path:
    """Write ``results.md``, ``results.csv`` and the plots into ``out_dir``; return the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = collected.cases
    cases.to_csv(out_dir / "results.csv", index=False)
    baseline = spec.baseline.label
    validation = cases[cases["evaluation"] == "validation"]
    lines: List[str] = ["# Benchmark results", ""]
    if collected.missing:
        lines += [f"**Incomplete:** {len(collected.missing)} run(s) have not finished: "
                  + "; ".join(collected.missing), ""]
    folds = ", ".join(str(f) for f in sorted(validation["fold"].unique())) if not validation.empty else "none"
    lines += ["## Leaderboard (cross-validation cases, nnU-Net's own validation with TTA)", "",
              f"Mean ± sd over the validation cases of the folds run ({folds} of nnU-Net's 5-fold split"
              + (f"; datasets trained under noise: folds {', '.join(map(str, spec.noise_folds))}" if spec.train_noise
                 else "") + f"). NSD at {spec.nsd_tolerance_mm:g} mm "
              f"(MONAI `compute_surface_dice`). Rank: MSD-style significance ranking (one-sided Wilcoxon, "
              f"alpha 0.05, per class and metric, averaged), lower is better.", ""]
    directions = {metric: True for metric in METRICS}
    ranks = msd_ranking(_long(validation), directions) if not validation.empty else pd.DataFrame()
    for task, frame in validation.groupby(["dataset", "configuration"], sort=False):
        lines += [f"### {task[0]} / {task[1]}", "", *_leaderboard(frame, ranks, f"{task[0]}/{task[1]}"), ""]
    lines += ["## Paired differences against the baseline", "",
              f"Per case, candidate minus `{baseline}` on the mean over classes; bootstrap 95% CI of the mean "
              f"difference (BCa, 10,000 resamples) and two-sided Wilcoxon signed-rank p.", "",
              *_paired_table(validation, baseline), ""]
    lines += ["## Per fold (mean foreground Dice)", "", *_per_fold(validation), ""]
    test = cases[cases["evaluation"] == "test"]
    if not test.empty:
        lines += ["## Labelled test split (every fold's model, TTA)", "", *_summary_table(test), "",
                  *_paired_table(test, baseline), ""]
    lines += ["## Training cost (measured in the same runs)", "", *_cost_table(collected.training, baseline), ""]
    lines += ["## Convergence", "", *_convergence(collected.training), ""]
    noise = cases[~cases["evaluation"].isin(["validation", "test"])]
    if not noise.empty:
        lines += ["## Noise robustness (validation cases corrupted at test time, no TTA)", "",
                  "SNR = mean intensity of the voxels above the 10th percentile / noise sigma. For a dataset trained "
                  "under noise the conditions add noise on top of its already noisy images. Mean foreground Dice:", "",
                  *_noise_table(noise), ""]
    plots = _plots(spec, collected, out_dir)
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += ["## Provenance", "", "Command:", "", "```", command, "```", "", "Specification:", "", "```json",
              json.dumps(_spec_dict(spec), indent=1), "```", ""]
    if versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    if timings:
        lines += ["Wall time per stage (seconds):", "", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()] + [""]
    path = out_dir / "results.md"
    path.write_text("\n".join(lines))
    return path


def _spec_dict(spec: BenchmarkSpec) -> dict:
    from dataclasses import asdict
    values = asdict(spec)
    values["work"] = "<work>"
    return values


def _long(cases: pd.DataFrame) -> pd.DataFrame:
    """``(dataset, configuration, trainer=method, case=fold:case, class, metric, value)`` for the ranking."""
    frame = cases.assign(trainer=cases["method"], case=cases["fold"].astype(str) + ":" + cases["case"])
    return frame.melt(id_vars=["dataset", "configuration", "trainer", "case", "class"], value_vars=list(METRICS),
                      var_name="metric", value_name="value")


def _per_case_mean(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Mean over classes per (method, fold, case): the per-case number the comparisons pair up."""
    return frame.groupby(["method", "fold", "case"])[metric].mean()


def _fmt(values: pd.Series) -> str:
    values = values.dropna()
    return "n/a" if values.empty else f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0:.4f}"


def _leaderboard(frame: pd.DataFrame, ranks: pd.DataFrame, task: str) -> List[str]:
    classes = list(dict.fromkeys(frame["class"]))
    header = ["method", "cases"] + [f"Dice {c}" for c in classes] + [f"NSD {c}" for c in classes] + \
        ["mean Dice", "mean NSD", "rank"]
    rows = []
    for method, group in frame.groupby("method", sort=False):
        rank = ranks.loc[ranks["trainer"] == method, task] if task in ranks else pd.Series(dtype=float)
        rows.append([f"`{method}`", str(group[["fold", "case"]].drop_duplicates().shape[0])]
                    + [_fmt(group.loc[group["class"] == c, m]) for m in METRICS for c in classes]
                    + [_fmt(_per_case_mean(group, m)) for m in METRICS]
                    + [f"{rank.iloc[0]:.2f}" if len(rank) else "n/a"])
    return _markdown(header, rows)


def _paired_table(frame: pd.DataFrame, baseline: str) -> List[str]:
    header = ["task", "method", "metric", "n", "baseline", "method mean", "difference", "95% CI", "Wilcoxon p"]
    rows = []
    for task, group in frame.groupby(["dataset", "configuration"], sort=False):
        for metric in METRICS:
            per_case = _per_case_mean(group, metric)
            if baseline not in per_case.index.get_level_values("method"):
                continue
            reference = per_case.loc[baseline]
            for method in per_case.index.get_level_values("method").unique():
                if method == baseline:
                    continue
                candidate = per_case.loc[method]
                common = reference.index.intersection(candidate.index)
                result = paired_comparison(reference.loc[common].to_numpy(), candidate.loc[common].to_numpy())
                rows.append([f"{task[0]}/{task[1]}", f"`{method}`", metric.upper() if metric == "nsd" else "Dice",
                             str(result.n), f"{result.baseline_mean:.4f}", f"{result.candidate_mean:.4f}",
                             f"{result.mean_difference:+.4f}", f"[{result.ci_low:+.4f}, {result.ci_high:+.4f}]",
                             f"{result.p_value:.3g}"])
    return _markdown(header, rows) if rows else ["(no method to compare with the baseline yet)"]


def _per_fold(frame: pd.DataFrame) -> List[str]:
    folds = sorted(frame["fold"].unique())
    header = ["task", "method"] + [f"fold {f}" for f in folds]
    rows = []
    for (dataset, configuration, method), group in frame.groupby(["dataset", "configuration", "method"], sort=False):
        per_case = _per_case_mean(group, "dice")
        rows.append([f"{dataset}/{configuration}", f"`{method}`"]
                    + [f"{per_case.xs(f, level='fold').mean():.4f}" if f in per_case.index.get_level_values("fold")
                       else "" for f in folds])
    return _markdown(header, rows)


def _summary_table(frame: pd.DataFrame) -> List[str]:
    header = ["task", "method", "mean Dice", "mean NSD"]
    rows = [[f"{d}/{c}", f"`{m}`", _fmt(_per_case_mean(g, "dice")), _fmt(_per_case_mean(g, "nsd"))]
            for (d, c, m), g in frame.groupby(["dataset", "configuration", "method"], sort=False)]
    return _markdown(header, rows)


def _cost_table(training: pd.DataFrame, baseline: str) -> List[str]:
    cost = cost_per_job(training)
    if cost.empty:
        return ["(no finished run)"]
    keys = ["dataset", "configuration", "fold"]
    reference = cost[cost["method"] == baseline].set_index(keys)
    header = ["task", "method", "folds", "s / iteration", "ratio to baseline", "peak memory (MB)", "ratio to baseline"]
    rows = []
    for (dataset, configuration, method), group in cost.groupby(["dataset", "configuration", "method"], sort=False):
        indexed = group.set_index(keys)
        common = indexed.index.intersection(reference.index)
        time_ratio = (indexed.loc[common, "seconds_per_iteration"] / reference.loc[common, "seconds_per_iteration"])
        memory_ratio = (indexed.loc[common, "peak_memory_mb"] / reference.loc[common, "peak_memory_mb"])
        rows.append([f"{dataset}/{configuration}", f"`{method}`", str(len(group)),
                     f"{group['seconds_per_iteration'].mean():.3f}", f"{time_ratio.mean():.3f}" if len(common) else "",
                     f"{group['peak_memory_mb'].mean():.0f}", f"{memory_ratio.mean():.3f}" if len(common) else ""])
    note = ["", "Seconds per iteration: median over epochs (first epoch excluded) of the train-step wall time, "
                "data loading included; peak memory: CUDA max allocated on GPU, process peak RSS on CPU. Ratios are "
                "per fold against the baseline's same fold, then averaged."]
    return _markdown(header, rows) + note


def _convergence(training: pd.DataFrame) -> List[str]:
    if training.empty:
        return ["(no finished run)"]
    header = ["task", "method", "epochs", "final EMA pseudo Dice", "best EMA pseudo Dice", "final MI estimate (nats)"]
    rows = []
    for (dataset, configuration, method), group in training.groupby(["dataset", "configuration", "method"],
                                                                    sort=False):
        last = group[group["epoch"] == group["epoch"].max()]
        mi = last["mi_estimate"].mean()
        rows.append([f"{dataset}/{configuration}", f"`{method}`", str(int(group["epoch"].max()) + 1),
                     f"{last['ema_fg_dice'].mean():.4f}", f"{group.groupby('fold')['ema_fg_dice'].max().mean():.4f}",
                     "n/a" if math.isnan(mi) else f"{mi:.4f}"])
    return _markdown(header, rows)


def _noise_table(noise: pd.DataFrame) -> List[str]:
    conditions = list(dict.fromkeys(noise["evaluation"]))
    header = ["task", "method"] + conditions
    rows = []
    for (dataset, configuration, method), group in noise.groupby(["dataset", "configuration", "method"], sort=False):
        rows.append([f"{dataset}/{configuration}", f"`{method}`"]
                    + [f"{_per_case_mean(group[group['evaluation'] == c], 'dice').mean():.4f}" for c in conditions])
    return _markdown(header, rows)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


# ---------------------------------------------------------------------------------------------------- plots
def _plots(spec: BenchmarkSpec, collected: Collected, out_dir: Path) -> List[Path]:
    written = []
    cases = collected.cases
    for (dataset, configuration), frame in cases[cases["evaluation"] == "validation"].groupby(
            ["dataset", "configuration"], sort=False):
        written.append(_dice_boxplot(frame, out_dir / f"dice_boxplot_{dataset}_{configuration}.png"))
    for (dataset, configuration), frame in collected.training.groupby(["dataset", "configuration"], sort=False) \
            if not collected.training.empty else []:
        written.append(_training_curves(frame, out_dir / f"training_curves_{dataset}_{configuration}.png"))
    noise = cases[~cases["evaluation"].isin(["validation", "test"])]
    conditions = dict(spec.eval_conditions())
    for (dataset, configuration), frame in noise.groupby(["dataset", "configuration"], sort=False):
        written.append(_dice_vs_snr(frame, conditions, out_dir / f"dice_vs_snr_{dataset}_{configuration}.png"))
    return written


def _dice_boxplot(frame: pd.DataFrame, path: Path) -> Path:
    classes = list(dict.fromkeys(frame["class"]))
    methods = list(dict.fromkeys(frame["method"]))
    fig, axes = plt.subplots(1, len(classes), figsize=(5 * len(classes), 4.5), squeeze=False)
    for ax, cls in zip(axes[0], classes):
        data = [frame[(frame["class"] == cls) & (frame["method"] == m)]["dice"].dropna() for m in methods]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"Dice, {cls}")
    fig.suptitle(f"{frame['dataset'].iloc[0]} / {frame['configuration'].iloc[0]}: validation cases")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _training_curves(frame: pd.DataFrame, path: Path) -> Path:
    fig, (dice_ax, mi_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (method, group) in enumerate(frame.groupby("method", sort=False)):
        colour = f"C{i}"
        for j, (fold, curve) in enumerate(group.groupby("fold")):
            label = method if j == 0 else None
            dice_ax.plot(curve["epoch"], curve["ema_fg_dice"], color=colour, label=label)
            if curve["mi_estimate"].notna().any():
                mi_ax.plot(curve["epoch"], curve["mi_estimate"], color=colour, label=label)
    dice_ax.set(xlabel="epoch", ylabel="EMA pseudo Dice", title="validation pseudo Dice")
    mi_ax.set(xlabel="epoch", ylabel="nats", title="MI estimate (IMNet trainers)")
    for ax in (dice_ax, mi_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _dice_vs_snr(frame: pd.DataFrame, conditions: Dict[str, Optional[tuple]], path: Path) -> Path:
    kinds = sorted({noise[0] for name, noise in conditions.items() if noise is not None})
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(6 * max(1, len(kinds)), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        names = [n for n, noise in conditions.items() if noise is not None and noise[0] == kind]
        snrs = [conditions[n][1] for n in names]
        clean_x = max(snrs) * 2
        for method, group in frame.groupby("method", sort=False):
            xs, means, errs = [], [], []
            for name, x in [(n, s) for n, s in zip(names, snrs)] + [("clean", clean_x)]:
                per_case = group[group["evaluation"] == name].groupby(["fold", "case"])["dice"].mean()
                if len(per_case):
                    xs.append(x)
                    means.append(per_case.mean())
                    errs.append(per_case.std(ddof=1) / math.sqrt(len(per_case)) if len(per_case) > 1 else 0.0)
            order = np.argsort(xs)
            ax.errorbar(np.array(xs)[order], np.array(means)[order], yerr=np.array(errs)[order], marker="o",
                        capsize=3, label=method)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted(snrs) + [clean_x], [f"{s:g}" for s in sorted(snrs)] + ["clean"])
        ax.set(xlabel="SNR (mean signal / sigma)", ylabel="mean foreground Dice (± s.e.)", title=f"{kind} noise")
        ax.legend(fontsize=8)
    fig.suptitle(f"{frame['dataset'].iloc[0]} / {frame['configuration'].iloc[0]}: validation cases under noise")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
