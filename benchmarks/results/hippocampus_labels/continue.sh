#!/usr/bin/env bash
# Continues this study with its pinned checkout (commit 5d5ae47) in the order the present code runs a label budget's
# fold: nnUNetTrainer, then the self-training student it teaches, then the two IMNet arms. The pinned code runs the
# student last, after the IMNet arms; a machine lost in between took the teacher's model with it (an archive keeps
# none), and the teacher had to be trained again. Each job goes through the pinned code's `benchmark-job`; finished
# ones are restored from ARCHIVE, and the pinned study script writes the report at the end.
# Usage (the pinned checkout's environment first on PATH): continue.sh SRC WORK RAW ARCHIVE
#   SRC: the pinned checkout (git worktree add --detach SRC 5d5ae47)
set -euo pipefail
src=${1:?usage: continue.sh SRC WORK RAW ARCHIVE} work=${2:?} raw=${3:?} archive=${4:?}
# the arguments of the pinned benchmarks/hippocampus_labels.sh, to save the spec and prepare the data first
nnunetv2-imnet benchmark --raw "$raw" -d 4 -c 3d_fullres --budget cpu1k --device cpu --folds 0 1 2 --no-full-labels \
    --full-label-results "$src/benchmarks/results/hippocampus_cpu1k/clean/results.csv" --work "$work/budgets" \
    --archive "$archive/budgets" --labeled-cases 1 2 \
    --trainers nnUNetTrainer nnUNetTrainerIMNet nnUNetTrainerIMNet_Unlabelled nnUNetSelfTraining --prepare-only
# the pinned spec's jobs: per budget and fold, indices i..i+3 are nnUNetTrainer, IMNet, unlabelled IMNet, student
for first in $(seq 0 4 20); do
    for index in "$first" $((first + 3)) $((first + 1)) $((first + 2)); do
        nnunetv2-imnet benchmark-job --spec "$work/budgets/spec.json" --index "$index"
    done
done
bash "$src/benchmarks/hippocampus_labels.sh" "$work" "$raw" "$archive"
