#!/usr/bin/env bash
# The label-efficiency study of benchmarks/results/hippocampus_labels/: does the MI term help with few labels?
# Hippocampus 3d_fullres, the cpu1k budget (1,000 steps at batch 2), folds 0-2 of nnU-Net's 5-fold split, four arms
# at each label budget: nnUNetTrainer and nnUNetTrainerIMNet on the N labelled cases, nnUNetTrainerIMNet_Unlabelled
# (N labelled + the fold's other training cases as unlabelled images) and nnUNetSelfTraining (a student nnUNetTrainer
# on the N labelled cases + the budget's nnUNetTrainer's pseudo-labels of the others). In order of priority:
#   budgets: 1 labelled case a fold, then 2 (the first among them); LABEL_BUDGETS="1 2 5" adds 5 when time allows
#   dose:    1 labelled case, nnUNetTrainerIMNet_Unlabelled_lambda1 (λ = 1) beside the budget phase's nnUNetTrainer
#            (restored from the same archive, not retrained); run with PHASES="budgets dose"
# The full-label point of the learning curve is the cpu1k study's clean phase (same budget, same folds).
# Every phase runs through the resumable benchmark runner: run this script again after an interruption and it
# continues where it stopped; each finished job is archived (--archive) in ARCHIVE/<phase>, by default in this
# checkout's benchmarks/results/hippocampus_labels/archive, so a new machine restores what finished.
# Usage: benchmarks/hippocampus_labels.sh [--report-only] WORK [RAW [ARCHIVE]]
#   --report-only trains nothing: each phase's report (WORK/<phase>/results) is written from ARCHIVE/<phase> alone.
set -euo pipefail
mode=()
if [ "${1:-}" = "--report-only" ]; then mode=(--report-only); shift; fi
work=${1:?usage: hippocampus_labels.sh [--report-only] WORK [RAW [ARCHIVE]]}
here=$(cd "$(dirname "$0")" && pwd)
raw=${2:-$(cd "$here/../.." && pwd)/shared/data}
archive=${3:-$here/results/hippocampus_labels/archive}
read -r -a budgets <<< "${LABEL_BUDGETS:-1 2}"
read -r -a phases <<< "${PHASES:-budgets}"
common=(--raw "$raw" -d 4 -c 3d_fullres --budget cpu1k --device cpu --folds 0 1 2 --no-full-labels
        --full-label-results "$here/results/hippocampus_cpu1k/clean/results.csv" "${mode[@]}")
for phase in "${phases[@]}"; do
    case $phase in
        budgets) nnunetv2-imnet benchmark "${common[@]}" --work "$work/budgets" --archive "$archive/budgets" \
                     --labeled-cases "${budgets[@]}" \
                     --trainers nnUNetTrainer nnUNetTrainerIMNet nnUNetTrainerIMNet_Unlabelled nnUNetSelfTraining ;;
        dose) nnunetv2-imnet benchmark "${common[@]}" --work "$work/dose" --archive "$archive/budgets" \
                  --labeled-cases 1 --trainers nnUNetTrainer nnUNetTrainerIMNet_Unlabelled_lambda1 ;;
        *) echo "unknown phase $phase (budgets, dose)" >&2; exit 2 ;;
    esac
done
