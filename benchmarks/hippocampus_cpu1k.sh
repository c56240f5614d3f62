#!/usr/bin/env bash
# The converged, controlled Hippocampus comparison of benchmarks/results/hippocampus_cpu1k/, in order of priority:
#   1. clean:  nnUNetTrainer, nnUNetTrainerIMNet, nnUNetTrainerIMNet_lambda0; all 5 folds
#   2. noisy:  nnUNetTrainer, nnUNetTrainerIMNet trained on the Rician SNR 5 copy; folds 0-2
#   3. resenc: nnUNetTrainer, nnUNetTrainerIMNet with nnUNetResEncUNetMPlans; folds 0-1
# Every phase runs through the resumable benchmark runner: run this script again after an interruption and it
# continues where it stopped (finished folds and evaluations are skipped, a started fold continues with --c).
# Usage: benchmarks/hippocampus_cpu1k.sh WORK [RAW]   (RAW defaults to ../shared/data; about 10 h on 2 CPU cores)
set -euo pipefail
work=${1:?usage: hippocampus_cpu1k.sh WORK [RAW]}
raw=${2:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
common=(--raw "$raw" -d 4 -c 3d_fullres --budget cpu1k --device cpu)
nnunetv2-imnet benchmark "${common[@]}" --work "$work/clean" --folds 0 1 2 3 4 \
    --trainers nnUNetTrainer nnUNetTrainerIMNet nnUNetTrainerIMNet_lambda0
nnunetv2-imnet benchmark "${common[@]}" --work "$work/noisy" --folds --train-noise rician:5 --noise-folds 0 1 2 \
    --trainers nnUNetTrainer nnUNetTrainerIMNet
nnunetv2-imnet benchmark "${common[@]}" --work "$work/resenc" --folds 0 1 --plans nnUNetResEncUNetMPlans \
    --trainers nnUNetTrainer nnUNetTrainerIMNet
