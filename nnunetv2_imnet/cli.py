"""``nnunetv2-imnet``: the demo, the benchmark and small helpers around nnU-Net.

Building the parser imports neither torch nor nnU-Net, so ``--help`` answers at once: the modules imported at the
top are plain Python, NumPy and SimpleITK; a command imports what needs torch or nnU-Net (training, running and
reporting a benchmark) when it runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

from nnunetv2_imnet._exttrainer import trainers_folder
from nnunetv2_imnet.benchmark.metrics import METRIC_PARAMETERS
from nnunetv2_imnet.benchmark.noise import NOISE_KINDS, derive_noisy_dataset, parse_condition
from nnunetv2_imnet.benchmark.slurm import DEFAULT_OPTIONS, option_name, write_slurm_scripts
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec
from nnunetv2_imnet.naming import (BASELINE_TRAINER, DEFAULT_PLANS, SELF_TRAINING, dataset_id, find_dataset_folder,
                                   lookup_dataset_folder)
from nnunetv2_imnet.training.budgets import BUDGETS


def _condition(text: str) -> Tuple[str, float]:
    try:
        return parse_condition(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _slurm_option(text: str) -> str:
    try:
        option_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _spec_default(name: str) -> Any:
    """The default of ``BenchmarkSpec``'s field ``name``: the command line's defaults are the spec's."""
    field = BenchmarkSpec.__dataclass_fields__[name]
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--datasets", type=int, nargs="+", required=True, help="dataset ids in --raw")
    parser.add_argument("--raw", default=os.environ.get("nnUNet_raw"),
                        help="nnU-Net raw folder holding the datasets (default: $nnUNet_raw); only read")
    parser.add_argument("--work", default="imnet_benchmark",
                        help="folder for preprocessed data, trained models, evaluations and results")
    parser.add_argument("-c", "--configurations", nargs="+", default=_spec_default("configurations"))
    parser.add_argument("--trainers", nargs="+", default=_spec_default("trainers"),
                        help=f"trainers without budget suffix; {BASELINE_TRAINER} is the baseline and must be "
                             f"included. With --labeled-cases also nnUNetTrainerIMNet_Unlabelled (its MI term sees the "
                             f"fold's unlabelled cases) and {SELF_TRAINING} (nnU-Net self-training: a student "
                             f"{BASELINE_TRAINER} on the labelled cases and its teacher's, the budget's "
                             f"{BASELINE_TRAINER}'s, pseudo-labels of the unlabelled ones)")
    parser.add_argument("--plans", nargs="+", default=_spec_default("plans"),
                        help="plans identifiers, e.g. nnUNetPlans nnUNetResEncUNetMPlans (ResEnc presets as further "
                             "baselines); the first is the baseline's")
    parser.add_argument("--folds", type=int, nargs="*", default=_spec_default("folds"),
                        help="folds trained on the clean datasets and their label budgets; none (--folds with no "
                             "value) trains only the noisy copies of --train-noise")
    parser.add_argument("--budget", choices=list(BUDGETS), default=_spec_default("budget"),
                        help="; ".join(f"{b.name}: {b.description}" for b in BUDGETS.values()))
    parser.add_argument("--device", choices=["cuda", "cpu", "mps"], default=None, help="default: cuda if available")
    parser.add_argument("--train-noise", type=_condition, nargs="*", default=_spec_default("train_noise"), metavar="KIND:SNR",
                        help="also train on noisy copies of each dataset, e.g. rician:10 (IM-Net's premise)")
    parser.add_argument("--noise-folds", type=int, nargs="+", default=_spec_default("noise_folds"),
                        help="folds trained on the noisy copies")
    parser.add_argument("--eval-noise", type=_condition, nargs="*", metavar="KIND:SNR",
                        default=_spec_default("eval_noise"),
                        help=f"test-time corruptions of the validation cases for the robustness curves; KIND one of "
                             f"{', '.join(NOISE_KINDS)}")
    for parameter in METRIC_PARAMETERS.values():
        parser.add_argument(parameter.option, dest=parameter.key, type=float,
                            default=_spec_default("metric_parameters")[parameter.key],
                            help=f"{parameter.help} (default %(default)g)")
    parser.add_argument("--seed", type=int, default=_spec_default("seed"), help="seed of the noise")
    parser.add_argument("--archive", default=None, metavar="DIR",
                        help="keep a light copy of every finished job here (summaries, curves, logs; no models or "
                             "predictions) and restore finished jobs from it instead of retraining them, so that a "
                             "run continues on a fresh machine")
    parser.add_argument("--labeled-cases", type=int, nargs="+", default=_spec_default("labeled_cases"), metavar="N",
                        help="label budgets: also train every arm on N labelled training cases per fold (drawn from "
                             "the fold's training cases, nested across budgets, the same for every arm), the fold's "
                             "other training cases unlabelled; each budget is a derived dataset 700+ "
                             "(docs/label_budgets.md)")
    parser.add_argument("--label-seed", type=int, default=_spec_default("label_seed"), help="seed of the draw of the labelled cases")
    parser.add_argument("--no-full-labels", action="store_true",
                        help="with --labeled-cases: train only at the budgets, not on all labels too (the learning "
                             "curve's full-label point can then come from --full-label-results)")
    parser.add_argument("--full-label-results", default=None, metavar="CSV",
                        help="results.csv of an earlier run on all labels (same datasets and budget): its validation "
                             "rows give the learning curve's full-label point for the arms this run has none of")


def _spec_from_args(args: argparse.Namespace):
    if not args.raw:
        raise SystemExit("error: no raw data folder: pass --raw or set nnUNet_raw.")
    return BenchmarkSpec(raw=str(Path(args.raw).resolve()), work=str(Path(args.work).resolve()),
                         datasets=args.datasets, configurations=args.configurations, trainers=args.trainers,
                         plans=args.plans, folds=args.folds, budget=args.budget,
                         device=args.device or _default_device(), train_noise=list(args.train_noise),
                         noise_folds=args.noise_folds, eval_noise=list(args.eval_noise),
                         metric_parameters={key: getattr(args, key) for key in METRIC_PARAMETERS}, seed=args.seed,
                         archive=str(Path(args.archive).resolve()) if args.archive else None,
                         labeled_cases=sorted(set(args.labeled_cases)), label_seed=args.label_seed,
                         full_labels=not args.no_full_labels,
                         full_label_results=str(Path(args.full_label_results).resolve())
                         if args.full_label_results else None).validate()


def cmd_benchmark(args: argparse.Namespace) -> None:
    spec = _spec_from_args(args)
    command = "nnunetv2-imnet " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.slurm:
        spec.save()
        submit = write_slurm_scripts(spec, Path(args.slurm), {"prepare": args.slurm_prepare_option,
                                                              "train": args.slurm_option,
                                                              "report": args.slurm_report_option})
        print(f"SLURM scripts written; submit with: bash {submit}")
        return
    from nnunetv2_imnet.benchmark.session import run_benchmark
    run_benchmark(spec, command, dry_run=args.dry_run, report_only=args.report_only, prepare_only=args.prepare_only)


def cmd_job(args: argparse.Namespace) -> None:
    """One SLURM array task: the job at ``--index`` of the saved spec."""
    from nnunetv2_imnet.benchmark.session import run_job
    run_job(Path(args.spec), args.index, retrain=args.retrain)


def cmd_prepare(args: argparse.Namespace) -> None:
    from nnunetv2_imnet.benchmark.session import prepare
    prepare(Path(args.spec))


def cmd_report(args: argparse.Namespace) -> None:
    from nnunetv2_imnet.benchmark.session import write_results
    write_results(BenchmarkSpec.load(Path(args.spec)), f"nnunetv2-imnet report --spec {args.spec}")


def cmd_archive(args: argparse.Namespace) -> None:
    from nnunetv2_imnet.benchmark.session import archive
    archive(Path(args.spec), Path(args.to))


def cmd_demo(args: argparse.Namespace) -> None:
    from nnunetv2_imnet.benchmark.synthetic import make_synthetic_dataset  # SciPy: only for the demo
    started = time.monotonic()
    work = Path(args.work or tempfile.mkdtemp(prefix="imnet_demo_")).resolve()
    raw = work / "synthetic_raw"
    dataset = make_synthetic_dataset(raw)
    print(f"synthetic noisy 3D dataset: {dataset}")
    spec = BenchmarkSpec(raw=str(raw), work=str(work / "benchmark"), datasets=[dataset_id(dataset.name)],
                         configurations=["3d_fullres"], folds=[0], budget="smoke", device=_default_device(),
                         eval_noise=[("rician", 10.0), ("rician", 5.0), ("gaussian", 5.0)]).validate()
    from nnunetv2_imnet.benchmark.session import run_benchmark
    path = run_benchmark(spec, "nnunetv2-imnet demo" + (f" --work {args.work}" if args.work else ""))
    text = path.read_text()
    leaderboard = text[text.index("## Leaderboard"):text.index("## Runs")]
    print("\n" + leaderboard.strip() + "\n")
    print("The smoke budget trains for a few iterations: these numbers show the pipeline works, not which "
          "method is better. Use --budget cpu or full on real data for that.")
    print(f"full report: {path}\nplots: {', '.join(str(p) for p in sorted(path.parent.glob('*.png')))}")
    if not args.work:
        print(f"everything the demo wrote is in {work} (about 180 MB; delete it when done)")
    print(f"demo finished in {time.monotonic() - started:.0f} s")


def cmd_make_noisy(args: argparse.Namespace) -> None:
    if not args.raw:
        raise SystemExit("error: no raw data folder: pass --raw or set nnUNet_raw.")
    kind, snr = args.noise
    source = find_dataset_folder(Path(args.raw), args.dataset)
    folder = derive_noisy_dataset(source, Path(args.output), args.id, kind, snr, args.seed)
    print(folder)


def cmd_prepare_unlabelled(args: argparse.Namespace) -> None:
    """Preprocess unlabelled images with a planned dataset's plans, for nnUNetTrainerIMNet_Unlabelled."""
    from nnunetv2_imnet.unlabelled import Manifest, prepare_unlabelled
    preprocessed = os.environ.get("nnUNet_preprocessed")
    if not preprocessed:
        raise SystemExit("error: nnUNet_preprocessed is not set; set it to the folder that holds the planned dataset.")
    started = time.monotonic()
    folder = prepare_unlabelled(Path(args.images), _dataset_folder(Path(preprocessed), args.dataset), args.p,
                                args.configuration, args.np)
    cases = len(Manifest.read(folder).cases)
    print(f"{cases} unlabelled cases prepared in {folder} ({time.monotonic() - started:.0f} s); train with "
          f"nnUNetv2_train {args.dataset} {args.configuration} FOLD -tr nnUNetTrainerIMNet_Unlabelled -p {args.p}")


def _dataset_folder(root: Path, dataset: str) -> Path:
    folder = lookup_dataset_folder(root, dataset)
    if folder is None:
        raise FileNotFoundError(f"No dataset {dataset} in {root}. Plan and preprocess it first: "
                                f"nnUNetv2_plan_and_preprocess -d {dataset}")
    return folder


def cmd_trainers(args: argparse.Namespace) -> None:
    from nnunetv2_imnet.training.catalogue import ALL_TRAINERS, description
    for name, cls in sorted(ALL_TRAINERS.items()):
        print(f"{name:40s} {description(cls)}")


def cmd_check(args: argparse.Namespace) -> None:
    from nnunetv2_imnet.preflight import PreflightError, check
    try:
        lines = check(args.dataset, args.configuration, args.tr, args.p)
    except PreflightError as error:
        raise SystemExit(f"error: {error}")
    print("OK: " + "\n    ".join(lines))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunetv2-imnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="smoke benchmark of baseline vs IMNet on generated data (no data needed)")
    demo.add_argument("--work", default=None, help="keep everything here (default: a new temporary folder)")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("benchmark", help="plan, train, validate, evaluate and report, resumably")
    _add_benchmark_arguments(bench)
    bench.add_argument("--dry-run", action="store_true", help="print every command instead of running it")
    bench.add_argument("--report-only", action="store_true", help="only collect what the runs wrote")
    bench.add_argument("--prepare-only", action="store_true", help="only link, derive and preprocess datasets")
    bench.add_argument("--slurm", default=None, metavar="DIR", help="write a SLURM job array there instead of running")
    for flag, kind, jobs in (("--slurm-option", "train", "the training tasks"),
                             ("--slurm-prepare-option", "prepare", "the preparation job"),
                             ("--slurm-report-option", "report", "the report job")):
        bench.add_argument(flag, action="append", default=[], metavar="OPTION", type=_slurm_option,
                           help=f"an #SBATCH option for {jobs}, replacing the default of the same name "
                                f"({' '.join(DEFAULT_OPTIONS[kind])}); repeat it, e.g. {flag}=--time=48:00:00")
    bench.set_defaults(func=cmd_benchmark)

    job = sub.add_parser("benchmark-job", help="run job INDEX of a saved spec (a SLURM array task)")
    job.add_argument("--spec", required=True)
    job.add_argument("--index", type=int, required=True)
    job.add_argument("--retrain", action="store_true",
                     help="set the job's finished run aside (its model, evaluations and timings, in the work folder "
                          "and the archive) and train it again: for a teacher restored from an archive without its "
                          "model, say")
    job.set_defaults(func=cmd_job)

    prepare = sub.add_parser("prepare", help="link, derive and preprocess the datasets of a saved spec")
    prepare.add_argument("--spec", required=True)
    prepare.set_defaults(func=cmd_prepare)

    report = sub.add_parser("report", help="collect results of a saved spec into results.md/csv and plots")
    report.add_argument("--spec", required=True)
    report.set_defaults(func=cmd_report)

    archive = sub.add_parser("archive", help="copy the finished jobs of a saved spec into an archive folder (the "
                                             "light record that --archive keeps)")
    archive.add_argument("--spec", required=True)
    archive.add_argument("--to", required=True, metavar="DIR")
    archive.set_defaults(func=cmd_archive)

    noisy = sub.add_parser("make-noisy", help="derive a noisy copy of a raw dataset (new id, same labels)")
    noisy.add_argument("-d", "--dataset", type=int, required=True)
    noisy.add_argument("--raw", default=os.environ.get("nnUNet_raw"))
    noisy.add_argument("--noise", type=_condition, required=True, metavar="KIND:SNR")
    noisy.add_argument("--id", type=int, required=True, help="dataset id of the copy")
    noisy.add_argument("-o", "--output", required=True, help="raw folder to write the copy into")
    noisy.add_argument("--seed", type=int, default=0)
    noisy.set_defaults(func=cmd_make_noisy)

    check = sub.add_parser("check", help="find what would stop nnUNetv2_train before any training work")
    check.add_argument("dataset", help="dataset id or name, as nnUNetv2_train takes it")
    check.add_argument("configuration")
    check.add_argument("-tr", default="nnUNetTrainerIMNet")
    check.add_argument("-p", default=DEFAULT_PLANS)
    check.set_defaults(func=cmd_check)

    unlabelled = sub.add_parser(
        "prepare-unlabelled", help="preprocess unlabelled images with a dataset's plans, for "
                                   "nnUNetTrainerIMNet_Unlabelled (their MI term learns from them)")
    unlabelled.add_argument("-d", "--dataset", required=True, help="dataset id or name, as nnUNetv2_train takes it")
    unlabelled.add_argument("-c", "--configuration", required=True, help="e.g. 3d_fullres or 2d")
    unlabelled.add_argument("-i", "--images", required=True,
                            help="folder of images named as nnU-Net names them (CASE_0000.nii.gz, one file per "
                                 "channel); only images are read")
    unlabelled.add_argument("-p", default=DEFAULT_PLANS, help=f"plans identifier (default {DEFAULT_PLANS})")
    unlabelled.add_argument("-np", type=int, default=2, help="worker processes (default 2)")
    unlabelled.set_defaults(func=cmd_prepare_unlabelled)

    path = sub.add_parser("trainers-path", help="print the folder to put in nnUNet_extTrainer")
    path.set_defaults(func=lambda args: print(trainers_folder()))

    listing = sub.add_parser("trainers", help="list the trainers this package adds")
    listing.set_defaults(func=cmd_trainers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Bad values (ValueError) and missing or failing files, folders and commands (OSError, which includes a
    failed nnU-Net command) are the user's to fix: one ``error:`` line and exit code 1, as argparse does for bad
    options. Anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
