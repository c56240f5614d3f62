"""The report's PNG figures: Dice per class, the paired fold-level differences, pseudo Dice and MI estimate against
training steps, Dice under noise, and the learning curve of a label-budget benchmark with its paired differences.

One unit per axis; every line of a fold-level curve is labelled with its fold.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from nnunetv2_imnet.benchmark.collect import Collected  # noqa: E402
from nnunetv2_imnet.benchmark.convergence import (CURVE, FRACTIONS, baseline_final, iterations_per_epoch,  # noqa: E402
                                                  with_steps)
from nnunetv2_imnet.benchmark.learning_curve import BUDGET  # noqa: E402
from nnunetv2_imnet.benchmark.metrics import METRICS  # noqa: E402
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, LabelBudget  # noqa: E402
from nnunetv2_imnet.naming import CLEAN, TEST, VALIDATION  # noqa: E402

#: one marker per nnU-Net fold, the same in every figure
FOLD_MARKERS = ("o", "s", "D", "^", "v")


def write_plots(spec: BenchmarkSpec, collected: Collected, differences: pd.DataFrame, out_dir: Path,
                curve: Optional[pd.DataFrame] = None, full_label: Optional[pd.DataFrame] = None) -> List[Path]:
    """Write every figure into ``out_dir``; return their paths in report order. ``differences``: the validation
    split's paired comparisons (``comparisons.compare_arms``); ``curve``: the learning curve's points
    (``learning_curve.learning_curve``); ``full_label``: its full-label comparisons
    (``learning_curve.full_label_differences``)."""
    written = []
    for (source, configuration), points in curve.groupby(["source", "configuration"], sort=False) \
            if curve is not None and not curve.empty else []:
        paired = budget_differences(differences, collected.label_budgets, source, configuration, spec.baseline.label)
        if full_label is not None and not full_label.empty and not paired.empty:
            paired = pd.concat([paired, full_label[(full_label["dataset"] == source)
                                                   & (full_label["configuration"] == configuration)]],
                               ignore_index=True)
        written.append(learning_curve_plot(points, out_dir / f"learning_curve_{source}_{configuration}.png", paired,
                                           spec.baseline.label))
    cases = collected.cases
    for (dataset, configuration), frame in cases[cases["evaluation"] == VALIDATION].groupby(
            ["dataset", "configuration"], sort=False):
        written.append(_dice_boxplot(frame, out_dir / f"dice_boxplot_{dataset}_{configuration}.png"))
    for (dataset, configuration), table in differences.groupby(["dataset", "configuration"], sort=False) \
            if not differences.empty else []:
        written.append(_fold_differences(table, out_dir / f"paired_differences_{dataset}_{configuration}.png"))
    for (dataset, configuration), frame in collected.training.groupby(["dataset", "configuration"], sort=False) \
            if not collected.training.empty else []:
        written.append(_training_curves(frame, spec.baseline.label, iterations_per_epoch(spec.budget),
                                        out_dir / f"training_curves_{dataset}_{configuration}.png"))
    conditions = dict(spec.eval_conditions())
    if all(condition is None for condition in conditions.values()):
        return written  # only the clean condition: no curve over SNR to draw
    noise = cases[~cases["evaluation"].isin([VALIDATION, TEST])]
    for (dataset, configuration), frame in noise.groupby(["dataset", "configuration"], sort=False):
        written.append(_dice_vs_snr(frame, conditions, out_dir / f"dice_vs_snr_{dataset}_{configuration}.png"))
    return written


def _dice_boxplot(frame: pd.DataFrame, path: Path) -> Path:
    """Dice per class over all validation cases, with each fold's mean beside its box (one model per fold)."""
    classes = list(dict.fromkeys(frame["class"]))
    methods = list(dict.fromkeys(frame["method"]))
    fig, axes = plt.subplots(1, len(classes), figsize=(5 * len(classes), 5), squeeze=False)
    for ax, cls in zip(axes[0], classes):
        rows = frame[frame["class"] == cls]
        ax.boxplot([rows.loc[rows["method"] == m, "dice"].dropna() for m in methods], showmeans=True)
        for position, method in enumerate(methods, start=1):
            for fold, dice in rows[rows["method"] == method].groupby("fold")["dice"]:
                ax.plot(position + 0.3, dice.mean(), color="0.3", linestyle="none", marker=_marker(fold), markersize=5)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=20, ha="right", fontsize=8)
        ax.set(title=f"Dice, {cls}", ylabel="Dice")
    handles = [Line2D([], [], color="C2", linestyle="none", marker="^", label="mean of all cases")]
    handles += _fold_markers(sorted(frame["fold"].unique()), "fold {} mean")
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{frame['dataset'].iloc[0]} / {frame['configuration'].iloc[0]}: validation cases (box: all cases "
                 f"of all folds)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def _fold_differences(table: pd.DataFrame, path: Path) -> Path:
    """Per metric, every comparison's fold-level difference with its 95% CI and each fold's own difference: the
    figure that says whether an arm helps, with the training variance in view."""
    metrics = list(dict.fromkeys(table["metric"]))
    pairs = list(dict.fromkeys(zip(table["method"], table["reference"])))
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 1.2 + 0.7 * len(pairs)), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = table[table["metric"] == metric].set_index(["method", "reference"])
        for y, pair in enumerate(pairs):
            if pair not in rows.index:
                continue
            row = rows.loc[pair]
            if not math.isnan(row["fold_ci_low"]):
                ax.plot([row["fold_ci_low"], row["fold_ci_high"]], [y, y], color="C0", linewidth=2.5)
            ax.plot(row["fold_difference"], y, color="C0", marker="o", markersize=8)
            for fold, difference in zip(row["folds"], row["fold_differences"]):
                ax.plot(difference, y + 0.25, color="0.3", linestyle="none", marker=_marker(fold), markersize=5)
        ax.axvline(0.0, color="0.3", linewidth=1)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))  # differences of 1e-3 need room for their labels
        ax.set_yticks(range(len(pairs)), [f"{method}\n- {reference}" for method, reference in pairs], fontsize=8)
        ax.set_ylim(len(pairs) - 0.5, -0.5)
        title = METRICS[metric].title
        ax.set(xlabel=f"difference in the mean {title} per case (method - reference)", title=title)
        ax.grid(axis="x", alpha=0.3)
    folds = sorted({int(f) for folds in table["folds"] for f in folds})
    handles = [Line2D([], [], color="C0", marker="o", linewidth=2.5,
                      label="mean over folds, 95% CI (folds, then cases, resampled)")]
    handles += _fold_markers(folds, "fold {}")
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{table['dataset'].iloc[0]} / {table['configuration'].iloc[0]}: paired differences, fold level "
                 f"(validation cases, TTA)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path)


def _training_curves(frame: pd.DataFrame, baseline: str, iterations: int, path: Path) -> Path:
    """Pseudo Dice (and, where logged, the MI estimate) against training steps: one thin line per fold, marked by
    its fold, and the mean over folds as a thick line per method; each fold's convergence targets as dashed lines."""
    curves = with_steps(frame, iterations)
    has_mi = bool(curves["mi_estimate"].notna().any())
    fig, axes = plt.subplots(1, 2 if has_mi else 1, figsize=(14 if has_mi else 8, 5.5), squeeze=False)
    dice_ax = axes[0][0]
    methods = list(dict.fromkeys(curves["method"]))
    _fold_lines(dice_ax, curves, methods, CURVE)
    dice_ax.set(xlabel="training steps (batches)", ylabel="pseudo Dice",
                title="validation pseudo Dice (nnU-Net's mean_fg_dice per epoch)")
    handles = _method_handles(curves, methods) + _fold_handles(curves)
    reference = baseline_final(frame, baseline).droplevel(["dataset", "configuration"])  # one task per plot
    for fraction, style in zip(FRACTIONS if len(reference) else (), ("--", ":")):
        for level in reference:
            dice_ax.axhline(fraction * level, color="0.3", linestyle=style, linewidth=1)
        per_fold = ", ".join(f"{fold}: {fraction * level:.3f}" for fold, level in reference.items())
        handles.append(Line2D([], [], color="0.3", linestyle=style,
                              label=f"{fraction:.0%} of {baseline}'s final, per fold ({per_fold})"))
    if has_mi:
        mi_ax = axes[0][1]
        _fold_lines(mi_ax, curves, methods, "mi_estimate")
        mi_ax.set(xlabel="training steps (batches)", ylabel="MI estimate (nats)",
                  title="MI estimate (trainers with an MI term)")
    columns = len(methods) + 1  # the method column, then folds and targets in columns of 2 or 3
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.suptitle(f"{frame['dataset'].iloc[0]} / {frame['configuration'].iloc[0]}: training curves")
    fig.tight_layout(rect=(0, 0.03 + 0.035 * math.ceil(len(handles) / columns), 1, 1))
    return _save(fig, path)


def _fold_lines(ax: Axes, curves: pd.DataFrame, methods: List[str], column: str) -> None:
    """Thin marked line per fold, thick line for the mean over the folds, one colour per method."""
    for index, method in enumerate(methods):
        group = curves[(curves["method"] == method) & curves[column].notna()]
        if group.empty:
            continue
        colour = f"C{index}"
        for fold, curve in group.groupby("fold"):
            ax.plot(curve["steps"], curve[column], color=colour, alpha=0.45, linewidth=1,
                    marker=_marker(fold), markersize=4.5)
        mean = group.groupby("steps")[column].mean()
        ax.plot(mean.index, mean.to_numpy(), color=colour, linewidth=2.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole batches
    ax.grid(alpha=0.3)


def _method_handles(curves: pd.DataFrame, methods: List[str]) -> List[Line2D]:
    return [Line2D([], [], color=f"C{i}", linewidth=2.5,
                   label=f"{m}: mean of {curves.loc[curves['method'] == m, 'fold'].nunique()} fold(s)")
            for i, m in enumerate(methods)]


def _fold_handles(curves: pd.DataFrame) -> List[Line2D]:
    return [Line2D([], [], color="0.4", alpha=0.7, linewidth=1, marker=_marker(f), markersize=5, label=f"fold {f}")
            for f in sorted(curves["fold"].unique())]


def _dice_vs_snr(frame: pd.DataFrame, conditions: Dict[str, Optional[tuple]], path: Path) -> Path:
    kinds = sorted({noise[0] for name, noise in conditions.items() if noise is not None})
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(6 * max(1, len(kinds)), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        names = [n for n, noise in conditions.items() if noise is not None and noise[0] == kind]
        snrs = [conditions[n][1] for n in names]
        clean_x = max(snrs) * 2
        groups = list(frame.groupby("method", sort=False))
        for index, (method, group) in enumerate(groups):
            xs, means, errs = [], [], []
            for name, x in [(n, s) for n, s in zip(names, snrs)] + [(CLEAN, clean_x)]:
                per_case = group[group["evaluation"] == name].groupby(["fold", "case"])["dice"].mean()
                if len(per_case):
                    xs.append(x)
                    means.append(per_case.mean())
                    errs.append(per_case.std(ddof=1) / math.sqrt(len(per_case)) if len(per_case) > 1 else 0.0)
            order = np.argsort(xs)
            ax.errorbar(dodged(np.array(xs)[order], index, len(groups)), np.array(means)[order],
                        yerr=np.array(errs)[order], marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted(snrs) + [clean_x], [f"{s:g}" for s in sorted(snrs)] + [CLEAN])
        ax.set(xlabel="SNR (mean signal / sigma)", ylabel="mean foreground Dice (± s.e.)", title=f"{kind} noise")
        ax.legend(fontsize=8)
    fig.suptitle(f"{frame['dataset'].iloc[0]} / {frame['configuration'].iloc[0]}: validation cases under noise")
    fig.tight_layout()
    return _save(fig, path)


def budget_differences(differences: pd.DataFrame, budgets: Sequence[LabelBudget], source: str, configuration: str,
                       baseline: str) -> pd.DataFrame:
    """The fold-level comparisons against ``baseline`` on ``source``'s label budgets, with each row's number of
    labelled cases (``labeled_cases``) and ``origin`` (``BUDGET``): the paired view of the learning curve."""
    cases = {budget.dataset: budget.labeled_cases for budget in budgets if budget.source == source}
    if differences.empty or not cases:
        return pd.DataFrame()
    rows = differences[differences["dataset"].isin(cases) & (differences["configuration"] == configuration)
                       & (differences["reference"] == baseline)]
    return rows.assign(labeled_cases=rows["dataset"].map(cases), origin=BUDGET)


def learning_curve_plot(points: pd.DataFrame, path: Path, paired: Optional[pd.DataFrame] = None,
                        baseline: str = "") -> Path:
    """One panel per metric: each arm's mean over folds against the number of labelled cases a fold (log axis), with
    its fold-level 95 % t-interval, and its full-label point (a star) where there is one. The arms are dodged
    sideways so that their intervals at the same budget do not hide each other.

    With ``paired`` (``budget_differences``, and ``learning_curve.full_label_differences`` for the stars), a second
    row shows each arm's fold-level difference to ``baseline`` on the same folds, with its 95 % CI and every fold's
    own difference: with few labels which case is labelled moves all arms together, so the first row's intervals are
    mostly that spread and the second row is the one that says whether an arm helps."""
    metrics = list(dict.fromkeys(points["metric"]))
    methods = list(dict.fromkeys(points["method"]))
    origins = [o for o in dict.fromkeys(points["origin"]) if o != BUDGET]
    with_paired = paired is not None and not paired.empty
    height = 9.5 if with_paired else 5.0
    fig, axes = plt.subplots(2 if with_paired else 1, len(metrics), figsize=(6.5 * len(metrics), height),
                             squeeze=False, sharex="col")
    styles = [(BUDGET, dict(marker="o", linestyle="-"))] + \
        [(o, dict(marker=_FULL_LABEL_MARKERS[i % 3], linestyle="none")) for i, o in enumerate(origins)]
    for ax, metric in zip(axes[0], metrics):
        for index, method in enumerate(methods):
            rows = points[(points["metric"] == metric) & (points["method"] == method)].sort_values("labeled_cases")
            for origin, style in styles:
                line = rows[rows["origin"] == origin]
                if len(line):
                    x = dodged(line["labeled_cases"].to_numpy(dtype=float), index, len(methods))
                    ax.errorbar(x, line["mean"], yerr=_error_bars(line), color=f"C{index}", capsize=3,
                                markersize=7, **style)
        ticks = sorted(points["labeled_cases"].unique())
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.tick_params(labelbottom=True)  # shared with the paired row, but read on its own
        clip_to_range(ax, METRICS[metric].value_range)
        title = METRICS[metric].title
        ax.set(xlabel="labelled training cases per fold", ylabel=f"mean {title} (validation cases)", title=title)
        ax.grid(alpha=0.3)
    if with_paired:
        for ax, metric in zip(axes[1], metrics):
            _paired_differences(ax, paired[paired["metric"] == metric], methods, baseline, styles)
            ax.set_title(f"{METRICS[metric].title}: difference to {baseline} on the same folds")
    handles = [Line2D([], [], color=f"C{i}", marker="o", label=m) for i, m in enumerate(methods)]
    handles += [Line2D([], [], color="0.3", linestyle="none", marker=_FULL_LABEL_MARKERS[i % 3], markersize=9,
                       label=f"all labels ({origin})") for i, origin in enumerate(origins)]
    if with_paired:
        handles += _fold_markers(sorted({int(f) for folds in paired["folds"] for f in folds}),
                                 "fold {}'s own difference")
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8, frameon=False)
    folds = sorted({len(f) for f in points["folds"]})
    fig.suptitle(f"{points['source'].iloc[0]} / {points['configuration'].iloc[0]}: learning curve, mean over "
                 f"{'/'.join(map(str, folds))} fold(s); bars: 95% t-interval over the fold means (none with 1 fold)")
    legend_rows = math.ceil(len(handles) / 3)
    fig.tight_layout(rect=(0, (0.25 + 0.175 * legend_rows) / height, 1, 1))  # inches kept free for the legend
    return _save(fig, path)


def _paired_differences(ax: Axes, rows: pd.DataFrame, methods: List[str], baseline: str,
                        styles: List[Tuple[str, dict]]) -> None:
    """Each arm's fold-level difference to the baseline at each budget and with every label (the colours, dodge and
    per-origin ``styles`` of the first row), its 95 % CI as a bar and each fold's difference as that fold's marker."""
    for index, method in enumerate(methods):
        for origin, style in styles:
            line = rows[(rows["method"] == method) & (rows["origin"] == origin)].sort_values("labeled_cases")
            if line.empty:
                continue
            x = dodged(line["labeled_cases"].to_numpy(dtype=float), index, len(methods))
            bars = _error_bars(line, "fold_difference", "fold_ci_low", "fold_ci_high")
            ax.errorbar(x, line["fold_difference"], yerr=bars, color=f"C{index}", capsize=3, markersize=7,
                        label=method if origin == BUDGET else f"{method}, all labels", **style)
            for position, row in zip(x, line.itertuples()):
                for fold, difference in zip(row.folds, row.fold_differences):
                    ax.plot(position, difference, color=f"C{index}", linestyle="none", marker=_marker(fold),
                            markersize=4, alpha=0.6)
    ax.axhline(0.0, color="0.3", linewidth=1)
    ax.set(xlabel="labelled training cases per fold", ylabel=f"method - {baseline} (fold level)")
    ax.grid(alpha=0.3)


def dodged(x: np.ndarray, index: int, count: int, spread: float = 0.03) -> np.ndarray:
    """``x`` moved sideways for the ``index``-th of ``count`` arms on a log axis: by ``spread`` decades a step,
    centred on the true position, so every arm keeps the same distance from it at every budget."""
    return x * 10 ** (spread * (index - (count - 1) / 2))


def clip_to_range(ax: Axes, value_range: Optional[Tuple[float, float]]) -> None:
    """Keep the y-axis within the values a metric can take: a t-interval over 2 or 3 folds can reach far beyond
    1 Dice and would squeeze every mean into a corner."""
    if value_range is not None:
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, value_range[0]), min(high, value_range[1]))


#: markers of the full-label points, one per origin (this run, an earlier run's results.csv)
_FULL_LABEL_MARKERS = ("*", "P", "X")


def _error_bars(rows: pd.DataFrame, centre: str = "mean", ci_low: str = "ci_low",
                ci_high: str = "ci_high") -> np.ndarray:
    """Asymmetric error bars from the CI columns; zero length where there is no interval."""
    low = (rows[centre] - rows[ci_low]).fillna(0.0).to_numpy()
    high = (rows[ci_high] - rows[centre]).fillna(0.0).to_numpy()
    return np.vstack([low, high])


def _marker(fold: int) -> str:
    return FOLD_MARKERS[int(fold) % len(FOLD_MARKERS)]


def _fold_markers(folds: List[int], label: str) -> List[Line2D]:
    """Legend entries for the fold markers; ``label`` has a ``{}`` for the fold."""
    return [Line2D([], [], color="0.3", linestyle="none", marker=_marker(f),
                   label=label.format(f)) for f in folds]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")  # figure legends may be wider than the axes
    plt.close(fig)
    return path
