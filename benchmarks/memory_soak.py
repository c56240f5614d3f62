"""Does IMNet training hold its memory steady? A large-patch 3D run on synthetic data, with RSS sampled over time.

    python benchmarks/memory_soak.py --iterations 300 --json imnet.json
    python benchmarks/memory_soak.py --iterations 300 --trainer nnUNetTrainer_full --json baseline.json
    python benchmarks/memory_soak.py --report imnet.json baseline.json      # the two side by side

A synthetic 3D dataset is planned and preprocessed by nnU-Net; its 3d_fullres configuration is then set to a
128^3 patch, batch 2 and 6 stages (nnU-Net's plan for a 1 mm isotropic whole-organ volume). On a 2-core CPU the
network's widths are divided by ``--width-divisor`` (default 4) so that a few hundred iterations take minutes
rather than hours; patch, batch, depth, data loading, augmentation, validation and the MI head are as nnU-Net runs
them. The trainer (``nnUNetTrainerIMNet`` unless ``--trainer`` says otherwise) trains in this process through
nnU-Net's own ``run_training`` (epochs of ``--iterations-per-epoch`` steps with validation and checkpoints between
them) while a thread records the resident set size every second, split into anonymous memory (tensors, heap) and
file-backed pages (shared libraries, memory-mapped preprocessed cases).

RSS swings by the size of a step's activations within every step, so the script summarises it per epoch (min,
median, 90th percentile, max) and measures growth as the least-squares slope of the per-epoch medians after the
first epoch (start-up and first allocations); it fails if that slope exceeds ``--max-growth-mb`` per 100
iterations. It also samples glibc's malloc statistics: RSS that grows while the memory malloc has handed out stays
flat is free memory malloc keeps (fragmentation), not memory the program holds. Ctrl-C (SIGINT) or SIGTERM (a
scheduler's time limit) ends the run early and reports what was measured up to then. ``--report`` prints saved
runs side by side without training: run the baseline with the same arguments to see which part of any growth is
nnU-Net's own.
"""
from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List

WORK = Path(tempfile.mkdtemp(prefix="imnet_soak_"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
for _name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ[_name] = str(WORK / _name)  # before nnU-Net is imported
os.environ.setdefault("nnUNet_n_proc_DA", "0")

import torch  # noqa: E402
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json  # noqa: E402

from nnunetv2_imnet.benchmark.synthetic import make_synthetic_dataset  # noqa: E402
from nnunetv2_imnet.benchmark.commands import with_console_scripts  # noqa: E402
from nnunetv2_imnet.training.catalogue import ALL_TRAINERS  # noqa: E402
from nnunetv2_imnet.training.heap import malloc_usage_mb  # noqa: E402
from soak_summary import SAMPLE_FIELDS, epoch_windows, growth_mb_per_100, rss_report  # noqa: E402 (beside this file)

DATASET_ID = 991


def memory_mb() -> List[float]:
    """RSS, anonymous RSS, file-backed RSS, malloc'd memory in use and malloc's free memory of this process, MB
    (the last two NaN without glibc)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value
    try:
        rss = [int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "RssAnon", "RssFile")]
    except KeyError as missing:
        raise RuntimeError(f"/proc/self/status has no {missing}: this script needs Linux") from None
    return rss + list(malloc_usage_mb() or (math.nan, math.nan))


class RssSampler(threading.Thread):
    """Samples ``SAMPLE_FIELDS`` every ``period`` seconds while the trainer trains."""

    def __init__(self, trainer, period: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.steps_done = 0
        train_step = trainer.train_step

        def counted_train_step(batch: dict) -> dict:  # counts the steps of any trainer, across epochs
            output = train_step(batch)
            self.steps_done += 1
            return output

        trainer.train_step = counted_train_step
        self.samples: List[List[float]] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append([time.monotonic() - self.start_time, self.steps_done, *memory_mb()])
            if len(self.samples) % 60 == 0:
                seconds, done, rss, anon, mapped, in_use, free = self.samples[-1]
                print(f"[soak] {seconds:.0f} s, {done} iterations, RSS {rss:.0f} MB (anonymous {anon:.0f}, "
                      f"file-backed {mapped:.0f}; malloc in use {in_use:.0f}, free {free:.0f})", flush=True)
            self.stop.wait(self.period)


def load_run(path: Path) -> dict:
    run = json.loads(path.read_text())
    run.setdefault("iterations_per_epoch", 50)  # the default of runs saved before it was recorded
    return run


def prepare(width_divisor: int) -> str:
    raw = Path(os.environ["nnUNet_raw"])
    dataset = make_synthetic_dataset(raw, dataset_id=DATASET_ID, num_cases=6, shape=(144, 144, 144))
    env = with_console_scripts(dict(os.environ))
    env.pop("nnUNet_n_proc_DA", None)
    subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    plans_file = Path(os.environ["nnUNet_preprocessed"]) / dataset.name / "nnUNetPlans.json"
    plans = load_json(str(plans_file))
    configuration = plans["configurations"]["3d_fullres"]
    stages = 6
    configuration.update(patch_size=[128, 128, 128], batch_size=2)
    configuration["architecture"]["arch_kwargs"].update(
        n_stages=stages, features_per_stage=[max(4, f // width_divisor) for f in (32, 64, 128, 256, 320, 320)],
        kernel_sizes=[[3, 3, 3]] * stages, strides=[[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
        n_conv_per_stage=[2] * stages, n_conv_per_stage_decoder=[2] * (stages - 1))
    save_json(plans, str(plans_file), sort_keys=False)
    return dataset.name


def _stop_early(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--width-divisor", type=int, default=4)
    parser.add_argument("--trainer", default="nnUNetTrainerIMNet")
    parser.add_argument("--max-growth-mb", type=float, default=50.0,
                        help="allowed slope of the per-epoch median RSS, MB per 100 iterations")
    parser.add_argument("--json", type=Path, default=None, help="save the run (summary and every sample)")
    parser.add_argument("--report", type=Path, nargs="+", default=None, metavar="JSON",
                        help="print saved runs side by side and exit")
    args = parser.parse_args()
    if args.report:
        print(rss_report([load_run(path) for path in args.report]))
        return
    if args.trainer not in ALL_TRAINERS:
        sys.exit(f"Unknown trainer {args.trainer!r}; use one of: {', '.join(sorted(ALL_TRAINERS))}")
    torch.set_num_threads(os.cpu_count() or 1)
    dataset = prepare(args.width_divisor)
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / dataset
    plans = load_json(str(preprocessed / "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = ALL_TRAINERS[args.trainer](plans, "3d_fullres", 0, load_json(str(preprocessed / "dataset.json")),
                                         torch.device("cpu"))
    trainer.num_iterations_per_epoch = args.iterations_per_epoch
    trainer.num_epochs = max(1, args.iterations // args.iterations_per_epoch)
    trainer.num_val_iterations_per_epoch = 2
    trainer.save_every = 1
    signal.signal(signal.SIGTERM, _stop_early)
    sampler = RssSampler(trainer)
    sampler.start()
    started = time.monotonic()
    try:
        trainer.run_training()
    except KeyboardInterrupt:
        print(f"interrupted: reporting the {sampler.steps_done} iterations done", flush=True)
    sampler.stop.set()
    sampler.join()
    run = {"trainer": args.trainer, "iterations": sampler.steps_done, "planned_iterations": args.iterations,
           "iterations_per_epoch": args.iterations_per_epoch, "patch": [128, 128, 128], "batch": 2,
           "width_divisor": args.width_divisor, "wall_seconds": round(time.monotonic() - started),
           "sample_fields": SAMPLE_FIELDS, "samples": sampler.samples}
    windows = epoch_windows(run["samples"], args.iterations_per_epoch)
    run["growth_mb_per_100_iterations"] = growth = growth_mb_per_100(windows)
    run["rss_mb_max"] = max(w["max"] for w in windows)
    if args.json:
        args.json.write_text(json.dumps(run))
    print(rss_report([run]))
    if math.isnan(growth):
        sys.exit(f"Too few epochs to measure growth: {sampler.steps_done} iterations in epochs of "
                 f"{args.iterations_per_epoch}; the slope needs at least 3 epochs.")
    if growth > args.max_growth_mb:
        sys.exit(f"The per-epoch median RSS grew by {growth:.1f} MB per 100 iterations after the first epoch "
                 f"(limit {args.max_growth_mb}). Run the baseline with the same arguments (--trainer "
                 f"nnUNetTrainer_full) and compare with --report to see which part is nnU-Net's own.")


if __name__ == "__main__":
    main()
