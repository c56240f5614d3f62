#!/usr/bin/env bash
# IMNet's train-step overhead on a GPU, in one go: benchmarks/overhead.py on the Hippocampus 3d_fullres and 2d plans,
# AMP on as nnU-Net sets it, the network eager (nnUNet_compile=false; the MI head compiled alone, IMNet's default,
# and eager too) and compiled (nnU-Net's CUDA default), printing times, profiler events and CUDA device events per
# step for nnUNetTrainer and nnUNetTrainerIMNet. About 3-5 minutes on an H200, most of it torch.compile; each run
# has a time limit (at most 500 s together) and a run that fails or runs out of time leaves its log and does not
# stop the others.
#
# For a CUDA machine with python3, torch and no nnU-Net or SimpleITK: BUNDLE is what ../shared/gpu-bundle/make.sh
# builds (BUNDLE/whl/*.whl installed with --target, BUNDLE/stub/SimpleITK put on PYTHONPATH). Run from the
# repository root:
#   OUT=results benchmarks/gpu_overhead.sh BUNDLE [PLANS_DIR] [extra overhead.py options ...]
# PLANS_DIR holds nnUNetPlans.json and dataset.json (default: the committed Hippocampus plans). Extra options go to
# every overhead.py run and win over the defaults (a CPU rehearsal: --device cpu --pairs 1 --warmup 0 --batch-size 2,
# with LIMIT_SCALE=10 to stretch the time limits of the four runs, 100, 80, 160 and 160 s, to a CPU's pace).
# Writes environment.txt, and per run NAME.json and NAME.log, to $OUT (default: gpu_overhead_results).
set -uo pipefail
bundle=${1:?usage: OUT=folder benchmarks/gpu_overhead.sh BUNDLE [PLANS_DIR] [overhead.py options ...]}
plans=${2:-benchmarks/plans/Dataset004_Hippocampus}
shift $(( $# >= 2 ? 2 : 1 ))
python=${PYTHON:-python3}
out=${OUT:-gpu_overhead_results}
mkdir -p "$out"
for file in "$plans/nnUNetPlans.json" "$plans/dataset.json" benchmarks/overhead.py; do
  [[ -f $file ]] || { echo "missing $file (run from the repository root; PLANS_DIR holds the two json files)"; exit 2; }
done
site=$(mktemp -d)
"$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$bundle"/whl/*.whl || exit 3
export PYTHONPATH="$site:$bundle/stub:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
{ git rev-parse HEAD 2>/dev/null; git status --short 2>/dev/null | head -20; date -u; nvidia-smi -L 2>/dev/null
  "$python" -c "import torch, nnunetv2, SimpleITK, nnunetv2_imnet.training.catalogue as c; print('torch',
    torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else
    'no GPU'); print('modules:', nnunetv2.__file__, SimpleITK.__file__, c.__file__)"
} 2>&1 | tee "$out/environment.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || { echo "torch, nnU-Net or this project does not import: see above"; exit 4; }

measure() {  # NAME SECONDS overhead.py options ...
  local name=$1 seconds=$(( $2 * ${LIMIT_SCALE:-1} ))
  shift 2
  echo "=== $name (at most $seconds s)"
  timeout "$seconds" "$python" benchmarks/overhead.py --plans "$plans/nnUNetPlans.json" --device cuda "$@" \
    --json "$out/$name.json" > "$out/$name.log" 2>&1
  local status=$?
  grep -A12 '^| plan' "$out/$name.log"  # overhead.py's two tables
  [[ $status == 0 ]] || { echo "$name: exit status $status; the end of $out/$name.log:"; tail -20 "$out/$name.log"
                          failed+=("$name"); }
}
failed=()
start=$SECONDS
measure eager 100 --configurations 3d_fullres 2d --compile off --pairs 40 --warmup 5 "$@"
measure eager_mi_head 80 --configurations 3d_fullres 2d --compile off --eager-mi-head --pairs 30 --warmup 3 "$@"
measure compiled_3d_fullres 160 --configurations 3d_fullres --compile on --pairs 30 --warmup 5 "$@"
measure compiled_2d 160 --configurations 2d --compile on --pairs 30 --warmup 5 "$@"
echo "done in $(( SECONDS - start )) s; results in $out/${failed[*]:+; failed: ${failed[*]}}"
[[ ${#failed[@]} == 0 ]]
