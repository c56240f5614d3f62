#!/usr/bin/env bash
# The converged, controlled Hippocampus comparison of benchmarks/results/hippocampus_cpu1k/, in order of priority:
#   1. clean:  nnUNetTrainer, nnUNetTrainerIMNet, nnUNetTrainerIMNet_lambda0; all 5 folds
#   2. noisy:  nnUNetTrainer, nnUNetTrainerIMNet trained on the Rician SNR 5 copy; folds 0-2
#   3. resenc: nnUNetTrainer, nnUNetTrainerIMNet with nnUNetResEncUNetMPlans; folds 0-1
# Every phase runs through the resumable benchmark runner: run this script again after an interruption and it
# continues where it stopped (finished folds and evaluations are skipped, a started fold continues with --c).
# Each finished job is also archived (--archive: summaries, curves, logs; no models) in ARCHIVE/<phase>, by default
# in this checkout's benchmarks/results/hippocampus_cpu1k/archive, so that a new machine with an empty WORK
# restores what finished and continues from there (commit the archive as jobs finish).
# Usage: benchmarks/hippocampus_cpu1k.sh [--report-only] WORK [RAW [ARCHIVE]]
#   --report-only trains nothing: each phase's report (WORK/<phase>/results) is written from ARCHIVE/<phase> alone.
#   RAW defaults to ../shared/data. On 2 idle CPU cores a plain nnU-Net model takes 20-36 min (training and
#   the eight evaluations, by machine), so the 21 of phases 1-2 take 7-13 h. A ResEnc M model of phase 3 took
#   32-37 min, about 1.5x a plain one (benchmarks/overhead.py --batch-size 2 --compile off measured its train step
#   at 1.84 s against 0.89 s, 2x, but epochs and evaluations grew less)
set -euo pipefail
mode=()
if [ "${1:-}" = "--report-only" ]; then mode=(--report-only); shift; fi
work=${1:?usage: hippocampus_cpu1k.sh [--report-only] WORK [RAW [ARCHIVE]]}
here=$(cd "$(dirname "$0")" && pwd)
raw=${2:-$(cd "$here/../.." && pwd)/shared/data}
archive=${3:-$here/results/hippocampus_cpu1k/archive}
common=(--raw "$raw" -d 4 -c 3d_fullres --budget cpu1k --device cpu "${mode[@]}")
nnunetv2-imnet benchmark "${common[@]}" --work "$work/clean" --archive "$archive/clean" --folds 0 1 2 3 4 \
    --trainers nnUNetTrainer nnUNetTrainerIMNet nnUNetTrainerIMNet_lambda0
nnunetv2-imnet benchmark "${common[@]}" --work "$work/noisy" --archive "$archive/noisy" --folds \
    --train-noise rician:5 --noise-folds 0 1 2 --trainers nnUNetTrainer nnUNetTrainerIMNet
nnunetv2-imnet benchmark "${common[@]}" --work "$work/resenc" --archive "$archive/resenc" --folds 0 1 \
    --plans nnUNetResEncUNetMPlans --trainers nnUNetTrainer nnUNetTrainerIMNet
