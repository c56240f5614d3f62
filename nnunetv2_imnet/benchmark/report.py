"""Turns collected results into ``results.md`` (leaderboard first), ``results.csv`` and PNG plots."""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from nnunetv2_imnet.benchmark.collect import Collected, cost_per_job
from nnunetv2_imnet.benchmark.comparisons import compare_arms, compare_budgets, noise_drops, per_case_means
from nnunetv2_imnet.benchmark.convergence import (FRACTIONS, final_values, iterations_per_epoch, late_gain,
                                                  steps_to_target)
from nnunetv2_imnet.benchmark.learning_curve import full_label_differences, label_gap, learning_curve, training_cases
from nnunetv2_imnet.benchmark.markdown import table as markdown_table
from nnunetv2_imnet.benchmark.metrics import METRICS
from nnunetv2_imnet.benchmark.report_budgets import label_budget_section, label_gap_section, learning_curve_section
from nnunetv2_imnet.benchmark.report_plots import write_plots
from nnunetv2_imnet.benchmark.self_training import PSEUDO_LABEL_STAGE
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec, Job, LabelBudget, Method, Task
from nnunetv2_imnet.benchmark.stats import msd_ranking
from nnunetv2_imnet.naming import BASELINE_TRAINER, CLEAN, SELF_TRAINING, TEST, VALIDATION

TASK = ["dataset", "configuration"]
WHICH_TO_TRUST = (
    "Two analyses of the same runs. **Trust the fold level** to decide whether a method helps: each fold trains "
    "its own model, so the spread of the fold-level differences includes training variance (initialisation, "
    "sampling order) — the very thing that decides whether a method beats the baseline when someone trains it "
    "again. The case level takes each arm's trained models as fixed and asks only whether *these* models differ "
    "on these cases; with hundreds of cases it finds tiny or lucky differences \"significant\" while one run "
    "that happened to leave nnU-Net's all-background plateau late can decide it. Its CI is narrower because it "
    "ignores training variance, not because it knows more.")

FOLD_LEVEL = (
    "Difference = mean over the folds both arms finished of (method - the arm it is compared against) on the fold's "
    "mean over cases (mean over classes per case). 95% CI: hierarchical bootstrap (10,000 resamples, percentile): "
    "draw folds with replacement, then each drawn fold's cases with replacement. p: exact two-sided sign-flip test "
    "on the fold-level differences (all 2^n sign patterns). With n folds the smallest possible p is 2/2^n: 0.0625 "
    "with 5 folds, so 5 folds can never give p < 0.05 and a p of 0.0625 is the strongest evidence they can show; 1 "
    "fold gives p = 1 and a CI of case noise only. With few folds the bootstrap cannot reach beyond the observed "
    "fold differences, so its CI is too narrow: read it together with the sign-flip p.")
CASE_LEVEL = (
    "Per case, method minus the arm it is compared against on the mean over classes, over the cases of the folds "
    "both arms finished; bootstrap 95% CI of the mean difference (BCa, 10,000 resamples) and two-sided Wilcoxon "
    "signed-rank p.")
NOISE_DROP = (
    "Per case, the Dice under the condition minus the Dice of the same case's clean prediction (both without TTA): "
    "what a model loses to noise. Difference = the method's change minus the reference's: positive means the "
    "method loses less Dice to noise than the arm it is compared against (the robustness IM-Net claims), whatever "
    "either scores on clean images. Fold and case level as in the paired differences above; the fold level is the "
    "one to trust.")
CONTROL = (
    "Each regularised IMNet arm is compared against the baseline and, where it runs beside it, against its weight-0 "
    "control (`{controls}`): the same code, whose critic trains and whose MI is estimated, with no MI gradient "
    "reaching the network. Against the baseline, an arm's difference is everything the IMNet code path changes; "
    "against the control, it is the MI gradient alone, which is what IM-Net claims helps.")
POSITIVE_CONTROL = (
    "What size of effect this design can see: `{baseline}` on each label budget against itself on the next smaller "
    "one (nested: the smaller budget's cases are among the larger's), paired by fold and validation case, with the "
    "fold-level and case-level analyses of the paired differences below; Holm's adjustment over this table only "
    "(a check of the design, not one of the study's comparisons). It shows a real effect, that of more labels, "
    "and how strong the fold-level evidence for such an effect can get with these folds.")
AGAINST_SELF_TRAINING = (
    "Each IMNet arm that learns from unlabelled images is also compared against nnU-Net self-training on the same "
    "label budget (`{pairs}`): both get each fold's same labelled and unlabelled cases, the one through the MI term, "
    "the other through its teacher's pseudo-labels (the semi-supervised baseline nnU-Net's maintainers recommend).")


def write_report(spec: BenchmarkSpec, collected: Collected, out_dir: Path, command: str,
                 timings: Optional[Dict[str, float]] = None, versions: Optional[Dict[str, str]] = None) -> Path:
    """Write ``results.md``, ``results.csv`` and the plots into ``out_dir``; return the markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = collected.cases
    cases.to_csv(out_dir / "results.csv", index=False)
    baseline = spec.baseline.label
    pairs = spec.reference_pairs()
    validation = cases[cases["evaluation"] == VALIDATION]
    budgets = {budget.dataset: budget.labeled_cases for budget in collected.label_budgets}
    lines: List[str] = ["# Benchmark results", ""]
    if collected.missing:
        lines += [f"**Incomplete:** {len(collected.missing)} run(s) have not finished; every table below uses the "
                  f"finished ones, and each comparison only the folds both of its arms finished.", ""]
    folds = ", ".join(str(f) for f in sorted(validation["fold"].unique())) if not validation.empty else "none"
    lines += ["## Leaderboard (cross-validation cases, nnU-Net's own validation with TTA)", "",
              f"Mean ± sd over the validation cases of the folds run ({folds} of nnU-Net's 5-fold split"
              + (f"; datasets trained under noise: folds {', '.join(map(str, spec.noise_folds))}" if spec.train_noise
                 else "") + "). " + _metric_parameters_text(spec)
              + "(MONAI `compute_surface_dice`). Rank: MSD-style significance ranking (one-sided Wilcoxon, "
              "alpha 0.05, per class and metric, averaged), lower is better.", ""]
    directions = {metric.name: metric.higher_is_better for metric in METRICS.values()}
    ranks = msd_ranking(_long(validation), directions) if not validation.empty else pd.DataFrame()
    for task, frame in validation.groupby(TASK, sort=False):
        labelled = f" ({budgets[task[0]]} labelled training case(s) a fold)" if task[0] in budgets else ""
        lines += [f"### {task[0]} / {task[1]}{labelled}", "", *_leaderboard(frame, ranks, f"{task[0]}/{task[1]}"),
                  ""]
        if frame.groupby("method")["fold"].apply(frozenset).nunique() > 1:
            lines += ["The methods cover different folds (see Runs), so these means are over different cases; the "
                      "ranking and the paired comparisons below use only the cases both methods have.", ""]
    lines += ["## Runs", "", *_runs_table(validation, collected), ""]
    curve = full_label_pairs = None
    if collected.label_budgets:
        full_label, origin = None, ""
        if spec.full_label_results is not None:
            full_label = pd.read_csv(spec.full_label_results)
            full_label = full_label[full_label["evaluation"] == VALIDATION]
            origin = f"from {shown_path(spec.full_label_results)}"
        cases_per_fold = training_cases(spec, collected.label_budgets)
        curve = learning_curve(validation, collected.label_budgets, list(METRICS), cases_per_fold, full_label, origin)
        full_label_pairs = full_label_differences(validation, collected.label_budgets, baseline, list(METRICS),
                                                  cases_per_fold, full_label, origin)
        lines += ["## Label budgets", "", *label_budget_section(spec, collected.label_budgets), "",
                  "## Learning curve", "", *learning_curve_section(curve), "",
                  "### Distance from the full-label baseline", "", *label_gap_section(label_gap(curve, baseline),
                                                                                       baseline), "",
                  *_positive_control(validation, collected.label_budgets, baseline)]
    differences = compare_arms(validation, baseline, list(METRICS), pairs)
    lines += ["## Paired differences against the baseline and the control", "", WHICH_TO_TRUST, "",
              *_comparison_sections(differences, baseline)]
    lines += ["## Per fold (mean over each fold's validation cases)", "",
              "One trained model per arm and fold; the fold-level comparison pairs these numbers.", "",
              *_per_fold(validation), ""]
    test = cases[cases["evaluation"] == TEST]
    if not test.empty:
        lines += ["## Labelled test split (every fold's model, TTA)", "", *_summary_table(test), "",
                  *_comparison_sections(compare_arms(test, baseline, list(METRICS), pairs), baseline)]
    lines += ["## Training cost (measured in the same runs)", "",
              *_cost_table(collected.training, baseline, spec.budget, timings or {}), ""]
    lines += ["## Convergence", "", *_convergence(collected.training, baseline, spec.budget), ""]
    noise = cases[~cases["evaluation"].isin([VALIDATION, TEST])]
    if not noise.empty:
        lines += ["## Noise robustness (validation cases corrupted at test time, no TTA)", "",
                  "SNR = mean intensity of the voxels above the 10th percentile / noise sigma. For a dataset trained "
                  "under noise the conditions add noise on top of its already noisy images. Mean foreground Dice:", "",
                  *_noise_table(noise), "", *_noise_comparison(noise, baseline, pairs)]
    plots = write_plots(spec, collected, differences, out_dir, curve, full_label_pairs)
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += ["## Provenance", "", "Command:", "", "```", command, "```", "", "Specification:", "", "```json",
              json.dumps(_spec_dict(spec), indent=1), "```", ""]
    if versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    if timings:
        lines += ["Wall time per stage (seconds; of a stage that was interrupted and resumed, the last attempt "
                  "only: the training cost table has the epochs of all attempts):", "", "| stage | seconds |",
                  "|---|---:|"]
        total = sum(timings.values())
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
        lines += [f"| all stages (the benchmark's compute, last attempts) | {total:.0f} ({total / 3600:.1f} h) |", ""]
    path = out_dir / "results.md"
    path.write_text("\n".join(lines))
    return path


def _metric_parameters_text(spec: BenchmarkSpec) -> str:
    """How the metrics' parameters were set, e.g. "NSD at 1 mm "."""
    return "".join(f"{m.parameter.described.format(value=spec.metric_parameters[m.parameter.key])} "
                   for m in METRICS.values() if m.parameter)


def _spec_dict(spec: BenchmarkSpec) -> dict:
    values = asdict(spec)
    values["work"] = "<work>"
    return values


def _runs_table(validation: pd.DataFrame, collected: Collected) -> List[str]:
    """Finished and unfinished folds per task and method."""
    finished = {key: sorted(group["fold"].unique()) for key, group in
                validation.groupby(TASK + ["method"], sort=False)}
    unfinished: Dict[tuple, List[int]] = {}
    for job in collected.missing:
        unfinished.setdefault((job.task.dataset, job.task.configuration, job.method.label), []).append(job.fold)
    keys = list(dict.fromkeys(list(finished) + list(unfinished)))
    if not keys:
        return ["(no run in this specification)"]
    rows = [[f"{d}/{c}", f"`{m}`", _folds(finished.get((d, c, m), [])), _folds(unfinished.get((d, c, m), []))]
            for d, c, m in keys]
    return markdown_table(["task", "method", "finished folds", "not finished"], rows)


def _folds(folds: Sequence[int]) -> str:
    return ", ".join(str(f) for f in sorted(folds)) or "none"


def _long(cases: pd.DataFrame) -> pd.DataFrame:
    """``(dataset, configuration, trainer=method, case=fold:case, class, metric, value)`` for the ranking."""
    frame = cases.assign(trainer=cases["method"], case=cases["fold"].astype(str) + ":" + cases["case"])
    return frame.melt(id_vars=["dataset", "configuration", "trainer", "case", "class"], value_vars=list(METRICS),
                      var_name="metric", value_name="value")


def _fmt(values: pd.Series) -> str:
    """Mean ± sd; a single value has no sd to show."""
    values = values.dropna()
    if len(values) < 2:
        return f"{values.iloc[0]:.4f}" if len(values) else "n/a"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def _title(name: str) -> str:
    """A metric's title with its direction, e.g. "Dice ↑"."""
    metric = METRICS[name]
    return f"{metric.title} {'↑' if metric.higher_is_better else '↓'}"


def _leaderboard(frame: pd.DataFrame, ranks: pd.DataFrame, task: str) -> List[str]:
    classes = list(dict.fromkeys(frame["class"]))
    header = ["method", "cases"] + [f"{_title(m)} {c}" for m in METRICS for c in classes] + \
        [f"mean {_title(m)}" for m in METRICS] + ["rank"]
    rows = []
    for method, group in frame.groupby("method", sort=False):
        rank = ranks.loc[ranks["trainer"] == method, task] if task in ranks else pd.Series(dtype=float)
        rows.append([f"`{method}`", str(group[["fold", "case"]].drop_duplicates().shape[0])]
                    + [_fmt(group.loc[group["class"] == c, m]) for m in METRICS for c in classes]
                    + [_fmt(per_case_means(group, m)) for m in METRICS]
                    + [f"{rank.iloc[0]:.2f}" if len(rank) else "n/a"])
    return markdown_table(header, rows)


def _comparison_sections(table: pd.DataFrame, baseline: str) -> List[str]:
    """The fold-level and the case-level comparison of one evaluation split (``compare_arms``'s table)."""
    if table.empty:
        return [f"(no method to compare with the baseline `{baseline}` yet: both need a finished fold)", ""]
    compared = table[table["reference"] != baseline]
    self_training = _against_self_training(compared)
    texts = []
    for text, rows in ((CONTROL, compared[~self_training]), (AGAINST_SELF_TRAINING, compared[self_training])):
        if len(rows):
            pairs = ", ".join(dict.fromkeys(f"{r.method}` vs `{r.reference}" for r in rows.itertuples()))
            texts += [text.format(controls=pairs, pairs=pairs), ""]
    family = _family(table, baseline, "metric")
    return texts + [
        "### Fold level (unit: one trained model per arm and fold)", "", FOLD_LEVEL + " " + family, "",
        *_fold_table(table, _title), "",
        "### Case level (unit: case; each arm's trained models taken as fixed)", "", CASE_LEVEL + " " + family, "",
        *_case_table(table, _title), ""]


def _positive_control(validation: pd.DataFrame, budgets: Sequence[LabelBudget], baseline: str) -> List[str]:
    """The baseline on each label budget against the next smaller one, where it finished both."""
    table = compare_budgets(validation, budgets, baseline, list(METRICS))
    if table.empty:
        return []
    return ["### Positive control: what one budget more gives the baseline", "",
            POSITIVE_CONTROL.format(baseline=baseline), "",
            "Fold level (unit: one trained model per budget and fold):", "", *_fold_table(table, _title), "",
            "Case level (unit: case):", "", *_case_table(table, _title), ""]


def _noise_comparison(noise: pd.DataFrame, baseline: str, pairs: Sequence[Tuple[str, str]]) -> List[str]:
    """The Dice each arm loses to every noise condition, paired against the baseline and the extra references."""
    conditions = [c for c in dict.fromkeys(noise["evaluation"]) if c != CLEAN]
    table = compare_arms(noise_drops(noise), baseline, conditions, pairs)
    if table.empty:
        return []
    return ["### Dice lost to noise, paired against the baseline and the control", "",
            NOISE_DROP + " " + _family(table, baseline, "condition"), "",
            "Fold level (unit: one trained model per arm and fold):", "", *_fold_table(table, _drop_title), "",
            "Case level (unit: case; each arm's trained models taken as fixed):", "",
            *_case_table(table, _drop_title), ""]


def _family(table: pd.DataFrame, baseline: str, what: str) -> str:
    extra = table[table["reference"] != baseline]
    self_training = _against_self_training(extra)
    pairs = " and every arm vs its control" * bool((~self_training).any()) + \
        f" and every unlabelled IMNet arm vs `{SELF_TRAINING}`" * bool(self_training.any())
    return (f"Holm's adjustment over the {len(table)} comparison(s) of this table (every candidate arm vs "
            f"`{baseline}`{pairs}, for each {what} and task); raw and adjusted p are both shown.")


def _against_self_training(table: pd.DataFrame) -> pd.Series:
    """Which comparisons of ``table`` are against nnU-Net self-training (on any plans)."""
    return table["reference"].str.split("@").str[0] == SELF_TRAINING


def _fold_table(table: pd.DataFrame, title: Callable[[str], str]) -> List[str]:
    rows = [[f"{r.dataset}/{r.configuration}", f"`{r.method}`", f"`{r.reference}`", title(r.metric), _folds(r.folds),
             f"{r.fold_difference:+.4f}", _interval(r.fold_ci_low, r.fold_ci_high), _p(r.sign_flip_p),
             _p(r.sign_flip_p_holm), _p(r.smallest_p)] for r in table.itertuples()]
    return markdown_table(["task", "method", "against", "metric", "folds", "difference", "95% CI", "sign-flip p",
                      "Holm p", "smallest possible p"], rows)


def _case_table(table: pd.DataFrame, title: Callable[[str], str]) -> List[str]:
    rows = [[f"{r.dataset}/{r.configuration}", f"`{r.method}`", f"`{r.reference}`", title(r.metric), str(r.cases),
             f"{r.reference_mean:.4f}", f"{r.method_mean:.4f}", f"{r.case_difference:+.4f}",
             _interval(r.case_ci_low, r.case_ci_high), _p(r.wilcoxon_p), _p(r.wilcoxon_p_holm)]
            for r in table.itertuples()]
    return markdown_table(["task", "method", "against", "metric", "n", "reference mean", "method mean", "difference",
                      "95% CI", "Wilcoxon p", "Holm p"], rows)


def _drop_title(condition: str) -> str:
    return f"Dice change at {condition} ↑"


def _interval(low: float, high: float) -> str:
    return "n/a" if math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def _per_fold(frame: pd.DataFrame) -> List[str]:
    """Per metric: each method's mean per fold, and the mean ± sd over its folds."""
    if frame.empty:
        return ["(no finished run)"]
    folds = sorted(frame["fold"].unique())
    header = ["task", "method", "metric"] + [f"fold {f}" for f in folds] + ["mean ± sd over folds"]
    rows = []
    for (dataset, configuration), task in frame.groupby(TASK, sort=False):
        for metric in METRICS:
            for method, per_case in per_case_means(task, metric).groupby(level="method", sort=False):
                per_fold = per_case.groupby(level="fold").mean()
                rows.append([f"{dataset}/{configuration}", f"`{method}`", _title(metric)]
                            + [f"{per_fold.loc[f]:.4f}" if f in per_fold.index else "" for f in folds]
                            + [_fmt(per_fold)])
    return markdown_table(header, rows)


def _summary_table(frame: pd.DataFrame) -> List[str]:
    header = ["task", "method"] + [f"mean {_title(m)}" for m in METRICS]
    rows = [[f"{d}/{c}", f"`{m}`"] + [_fmt(per_case_means(g, metric)) for metric in METRICS]
            for (d, c, m), g in frame.groupby(TASK + ["method"], sort=False)]
    return markdown_table(header, rows)


def _cost_table(training: pd.DataFrame, baseline: str, budget: str, timings: Dict[str, float]) -> List[str]:
    cost = cost_per_job(training)
    if cost.empty:
        return ["(no finished run)"]
    students = bool((cost["trainer"] == SELF_TRAINING).any())
    cost["with_teacher"] = _with_teacher(cost, budget, timings)
    letters = _machine_letters(cost["machines"])
    keys = ["dataset", "configuration", "fold"]
    reference = cost[cost["method"] == baseline].set_index(keys)
    columns = ["seconds_per_iteration", "fastest_seconds_per_iteration", "peak_memory_mb"]
    header = ["task", "method", "folds"] + ["machines"] * bool(letters) + ["training (min)"] + \
             ["incl. teacher (min)"] * students + [
              "s / iteration", "ratio to baseline", "ratio per fold",
              "fastest epoch: s / iteration", "ratio to baseline", "peak memory (MB)", "ratio to baseline"]
    rows = []
    for (dataset, configuration, method), group in cost.groupby(["dataset", "configuration", "method"], sort=False):
        indexed = group.set_index(keys)
        common = indexed.index.intersection(reference.index)
        ratios = (indexed.loc[common, columns] / reference.loc[common, columns]).sort_index()
        elsewhere = {key for key in common if indexed.at[key, "machines"] != reference.at[key, "machines"]}
        mean_ratio = {column: f"{ratios[column].mean():.3f}" if len(common) else "" for column in columns}
        teacher = [_minutes(group["with_teacher"]) if (group["trainer"] == SELF_TRAINING).all() else ""]
        machines = [_machine_cell(group["machines"], letters)] if letters else []
        rows.append([f"{dataset}/{configuration}", f"`{method}`", str(len(group))] + machines + [
                     _minutes(group["training_minutes"])] + teacher * students + [
                     f"{group['seconds_per_iteration'].mean():.3f}",
                     mean_ratio["seconds_per_iteration"],
                     ", ".join(f"{key[-1]}: {r:.2f}" + "†" * (key in elsewhere)
                               for key, r in ratios["seconds_per_iteration"].items()),
                     f"{group['fastest_seconds_per_iteration'].mean():.3f}",
                     mean_ratio["fastest_seconds_per_iteration"], f"{group['peak_memory_mb'].mean():.0f}",
                     mean_ratio["peak_memory_mb"]])
    note = ["", "Training: the wall time of all epochs per model (nnU-Net's epoch timestamps: every attempt of a "
                "resumed run, and any time the run was paused or shared the machine, included; start-up and the "
                "final validation not), mean and range over folds. Seconds per iteration: median over epochs (first "
                "epoch excluded) of the train-step wall time, data loading included, and the fastest such epoch; "
                "peak memory: CUDA max allocated on GPU, process peak RSS on CPU. Ratios are per fold against the "
                "baseline's same fold (listed for the median), then averaged. Other work on the machine slows epochs "
                "and never speeds one up, so a fold whose ratio is far from the others', or a median and a fastest "
                "epoch that disagree, mean that the runs were loaded unequally: the fastest epoch is then the better "
                "estimate, and `benchmarks/overhead.py` (both trainers alternated step by step on the same batches) "
                "the measure to trust."]
    if letters:
        note += ["", "Machines (each training attempt's, from its fold's attempts.json; ? where a run has no "
                     "record): " + "; ".join(f"{letter} = {name}" for name, letter in letters.items()) + ". † the "
                     "run and the baseline's same fold trained on different machines: that ratio mixes the "
                     "machines' speed with the method's cost."]
    if students:
        note += ["", f"Incl. teacher: for `{SELF_TRAINING}`, per fold the student's training, its teacher's (the "
                     f"`{BASELINE_TRAINER}` of the same label budget and fold) and the teacher's prediction of the "
                     f"pseudo-labels (the stage's wall time in timings.json, its last attempt), in total: what the "
                     f"self-training arm costs from scratch."]
    return markdown_table(header, rows) + note


def _machine_cell(machines: pd.Series, letters: Dict[str, str]) -> str:
    """The letters of the machines a method's runs trained on, "?" too where one of them has no record."""
    used = sorted({letters[name] for names in machines for name in names})
    return ", ".join(used + ["?"] * any(not names for names in machines))


def _machine_letters(machines: pd.Series) -> Dict[str, str]:
    """Machine name -> A, B, ... in order of appearance; empty where no run recorded its machine."""
    names = dict.fromkeys(name for names in machines for name in names)
    return {name: chr(ord("A") + i) for i, name in enumerate(names)}


def _with_teacher(cost: pd.DataFrame, budget: str, timings: Dict[str, float]) -> pd.Series:
    """Per self-training row of ``cost_per_job``: its minutes, its teacher's and those of the pseudo-labelling (NaN
    where one is unknown); NaN for the other arms."""
    teachers = cost[cost["trainer"] == BASELINE_TRAINER].set_index(
        ["dataset", "configuration", "plans", "fold"])["training_minutes"]

    def total(row) -> float:
        if row.trainer != SELF_TRAINING:
            return math.nan
        student = Job(Task(row.dataset, row.configuration), Method(row.trainer, row.plans), row.fold, budget)
        pseudo_labels = timings.get(f"{PSEUDO_LABEL_STAGE} {student.label}", math.nan) / 60
        teacher = teachers.get((row.dataset, row.configuration, row.plans, row.fold), math.nan)
        return row.training_minutes + teacher + pseudo_labels

    return pd.Series([total(row) for row in cost.itertuples()], index=cost.index, dtype=float)


def _minutes(values: pd.Series) -> str:
    """Mean and range of per-fold minutes; "n/a" where a run has no epoch timestamps."""
    if values.isna().any():
        return "n/a"
    return f"{values.mean():.0f}" + (f" ({values.min():.0f}–{values.max():.0f})" if len(values) > 1 else "")


def _convergence(training: pd.DataFrame, baseline: str, budget: str) -> List[str]:
    """Final pseudo Dice per method and the steps each fold needed to reach fractions of the baseline's final."""
    if training.empty:
        return ["(no finished run)"]
    iterations = iterations_per_epoch(budget)
    final = final_values(training)
    gains = late_gain(training).set_index(TASK + ["method"])
    header = ["task", "method", "folds", "epochs", "steps", "final pseudo Dice", "gain in the last quarter",
              "final EMA pseudo Dice", "best EMA pseudo Dice", "final MI estimate (nats)"]
    rows = []
    for (dataset, configuration, method), group in final.groupby(TASK + ["method"], sort=False):
        curves = training[(training["dataset"] == dataset) & (training["configuration"] == configuration)
                          & (training["method"] == method)]
        epochs = int(group["epoch"].max()) + 1
        rows.append([f"{dataset}/{configuration}", f"`{method}`", _folds(group["fold"].unique()), str(epochs),
                     str(epochs * iterations), _fmt(group["mean_fg_dice"]),
                     _fmt(gains.loc[[(dataset, configuration, method)], "late_gain"]), _fmt(group["ema_fg_dice"]),
                     _fmt(curves.groupby("fold")["ema_fg_dice"].max()),
                     "n/a" if group["mi_estimate"].isna().all() else _fmt(group["mi_estimate"])])
    targets = steps_to_target(training, baseline, iterations)
    lines = [f"Pseudo Dice: nnU-Net's per-epoch `mean_fg_dice` on the epoch's validation batches (not the full "
             f"validation), mean ± sd over folds; a step is one training batch ({iterations} per epoch on the "
             f"'{budget}' budget), and epoch e's value is measured after (e + 1) x {iterations} steps. Gain in the "
             "last quarter: per fold, the mean pseudo Dice over the last quarter of the epochs minus the mean over "
             "the quarter before, a measured distance from the plateau (near 0: more steps of this schedule would "
             "not pay; clearly above 0: the budget stops runs that still learn). nnU-Net's EMA (weight 0.9) is "
             "shown for reference: over few epochs it lags the curve.", "",
             *markdown_table(header, rows), "",
             f"### Steps to reach {' and '.join(f'{f:.0%}' for f in FRACTIONS)} of the baseline's final pseudo "
             "Dice, per fold",
             "", f"Target, per fold = fraction x `{baseline}`'s pseudo Dice at its last epoch on the same fold: "
             "paired like the fold-level comparisons, so that a fold whose training cases leave less room (with few "
             "labels, which case is labelled moves a fold's level by up to 0.1 Dice) does not count as slow. Steps "
             "= the first validation at which a fold's pseudo Dice reaches its target. Median and range over the "
             f"folds that have a finished `{baseline}` run; a fold that never reaches its target counts as slower "
             "than any that does (the median is \"not reached\" when half or more of the folds miss it).", ""]
    if targets.empty:
        return lines + [f"(no target: `{baseline}` has no finished run on these folds)"]
    target_rows = [[f"{r.dataset}/{r.configuration}", f"`{r.method}`", f"{r.fraction:.0%}",
                    f"{r.reached} of {len(r.folds)}", _steps(r.median), f"{_steps(r.fastest)} – {_steps(r.slowest)}",
                    ", ".join(f"{fold}: {_steps(steps)} (target {target:.4f})"
                              for fold, steps, target in zip(r.folds, r.steps, r.targets))]
                   for r in targets.itertuples()]
    return lines + markdown_table(["task", "method", "fraction of the baseline's final", "folds reaching it",
                                   "median steps", "range", "steps per fold (its target)"], target_rows)


def _steps(value: Optional[float]) -> str:
    return "not reached" if value is None or not np.isfinite(value) else f"{value:,.0f}"


def _noise_table(noise: pd.DataFrame) -> List[str]:
    conditions = list(dict.fromkeys(noise["evaluation"]))
    header = ["task", "method", "folds"] + conditions
    rows = []
    for (dataset, configuration, method), group in noise.groupby(["dataset", "configuration", "method"], sort=False):
        rows.append([f"{dataset}/{configuration}", f"`{method}`", _folds(group["fold"].unique())]
                    + [f"{per_case_means(group[group['evaluation'] == c], 'dice').mean():.4f}" for c in conditions])
    return markdown_table(header, rows)


def shown_path(path: str) -> str:
    """``path`` relative to the working directory where it lies below it, so that a report made from the repository
    root names the same file in the same words on every clone; as given otherwise."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path
