"""Train-step time and memory of nnUNetTrainerIMNet against nnUNetTrainer, side by side in one run.

Both trainers are built by nnU-Net from the same plans (network, loss, optimizer, AMP and torch.compile exactly as
in real training) and fed the same batches, alternating step by step (and alternating which goes first) so that
drift in machine load hits both equally. Prints per-plan medians, the IMNet/baseline ratios and, as a noise-free
attribution, the time of the MI head alone (forward + backward on the plan's bottleneck) as a share of the step.

    python benchmarks/overhead.py                       # Hippocampus 3d_fullres and 2d plans + a large 3D plan
    python benchmarks/overhead.py --device cuda         # on a GPU: AMP and torch.compile as nnU-Net uses them

Plans: nnU-Net's planner is run on the real Hippocampus data (``--raw``, default ``../shared/data``); the large
plan is nnU-Net's 3d_fullres template at a 128^3 patch, batch 2, 6 stages (what nnU-Net plans for a 1 mm
isotropic whole-organ volume). Batches are synthetic (the step cost does not depend on the content).

Memory: on CUDA the peak allocated memory of each step. PyTorch keeps no peak statistics for CPU tensors, so on
CPU (and also on CUDA) the script reports what a step holds at its peak, the end of the forward pass: the tensors
saved for backward plus parameters and optimizer state, each storage counted once.
"""
from __future__ import annotations

import argparse
import atexit
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

WORK = Path(tempfile.mkdtemp(prefix="imnet_overhead_"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
for _name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ[_name] = str(WORK / _name)  # nnU-Net reads these at import time

import numpy as np  # noqa: E402
import torch  # noqa: E402
from batchgenerators.utilities.file_and_folder_operations import load_json  # noqa: E402

from nnunetv2_imnet.benchmark.commands import with_console_scripts  # noqa: E402
from nnunetv2_imnet.training.network import find_bottleneck  # noqa: E402
from nnunetv2_imnet.training.catalogue import ALL_TRAINERS  # noqa: E402

DATASET = "Dataset004_Hippocampus"


def plan_hippocampus(raw: Path) -> Tuple[dict, dict]:
    """nnU-Net's own fingerprint and plans for the real data (no preprocessing needed)."""
    env = with_console_scripts(dict(os.environ, nnUNet_raw=str(raw.resolve())))
    env.pop("nnUNet_n_proc_DA", None)
    for command in (["nnUNetv2_extract_fingerprint", "-d", "4", "-np", "2"], ["nnUNetv2_plan_experiment", "-d", "4"]):
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    folder = WORK / "nnUNet_preprocessed" / DATASET
    return load_json(str(folder / "nnUNetPlans.json")), load_json(str(raw / DATASET / "dataset.json"))


def add_large_plan(plans: dict) -> None:
    """A 3d_fullres-style configuration with a 128^3 patch, batch 2 and 6 stages."""
    large = copy.deepcopy(plans["configurations"]["3d_fullres"])
    stages = 6
    large.update(patch_size=[128, 128, 128], batch_size=2, data_identifier="large_3d")
    large["architecture"]["arch_kwargs"].update(
        n_stages=stages, features_per_stage=[32, 64, 128, 256, 320, 320], kernel_sizes=[[3, 3, 3]] * stages,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (stages - 1), n_conv_per_stage=[2] * stages,
        n_conv_per_stage_decoder=[2] * (stages - 1))
    plans["configurations"]["large_3d"] = large


def make_trainer(name: str, plans: dict, configuration: str, dataset_json: dict, device: torch.device):
    folder = WORK / "nnUNet_preprocessed" / DATASET / plans["configurations"][configuration]["data_identifier"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "placeholder.b2nd").touch()  # nnU-Net infers its dataset class from the files it finds here
    plans = copy.deepcopy(plans)
    plans["continue_training"] = False
    trainer = ALL_TRAINERS[name](plans, configuration, 0, dataset_json, device)
    trainer.initialize()
    trainer.network.train()
    return trainer


def synthetic_batches(trainer, count: int, seed: int) -> List[dict]:
    generator = torch.Generator().manual_seed(seed)
    patch = list(trainer.configuration_manager.patch_size)
    scales = trainer._get_deep_supervision_scales() or [[1.0] * len(patch)]
    classes = len(trainer.label_manager.all_labels)
    batches = []
    for _ in range(count):
        data = torch.randn([trainer.batch_size, trainer.num_input_channels] + patch, generator=generator)
        target = [torch.randint(0, classes, [trainer.batch_size, 1] + [round(p * s) for p, s in zip(patch, scale)],
                                generator=generator).float() for scale in scales]
        batches.append({"data": data, "target": target if trainer.enable_deep_supervision else target[0]})
    return batches


def training_state_bytes(trainer, batch: dict) -> int:
    """Memory held at the end of the forward pass, the peak of a step: tensors saved for backward plus parameters
    and optimizer state (gradients are freed by ``zero_grad(set_to_none=True)`` before the forward)."""
    saved: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.train_step(batch)
    # counted separately: during backward, gradients may reuse the addresses of freed activations
    state: Dict[int, int] = {}
    for parameter in trainer.network.parameters():
        for tensor in [parameter] + list(trainer.optimizer.state.get(parameter, {}).values()):
            if isinstance(tensor, torch.Tensor):
                state[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    parameters = {p.untyped_storage().data_ptr() for p in trainer.network.parameters()}
    return sum(v for k, v in saved.items() if k not in parameters) + sum(state.values())


def timed_step(trainer, batch: dict, device: torch.device) -> Tuple[float, float, int]:
    """Seconds, peak CUDA MB (nan on CPU) and host-device synchronisations of one train step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    if device.type != "cuda":
        return seconds, float("nan"), 0
    torch.cuda.set_sync_debug_mode(0)
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return seconds, torch.cuda.max_memory_allocated(device) / 2 ** 20, syncs


def mi_head_seconds(trainer, batch: dict, device: torch.device, repeats: int = 20) -> float:
    """Median forward + backward time of the MI head alone on this plan's bottleneck: the part of the step that
    IMNet adds, measured without the noise of timing two whole U-Net steps against each other."""
    network = trainer.unwrapped_network()
    bottleneck = find_bottleneck(network.segmentation_network, trainer.num_input_channels,
                                 trainer.configuration_manager.patch_size)
    features = torch.randn(trainer.batch_size, bottleneck.channels, *bottleneck.grid, device=device,
                           requires_grad=True)
    image = batch["data"].to(device)
    seconds = []
    for _ in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        network.mi_head(features, image).loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    network.mi_head.zero_grad(set_to_none=True)
    return statistics.median(seconds[2:])


def compare(plans: dict, dataset_json: dict, configuration: str, steps: int, warmup: int, device: torch.device,
            baseline: str, candidate: str) -> dict:
    trainers = {n: make_trainer(n, plans, configuration, dataset_json, device) for n in (baseline, candidate)}
    batches = synthetic_batches(trainers[baseline], warmup + steps, seed=0)
    results = {n: {"seconds": [], "cuda_mb": [], "syncs": []} for n in trainers}
    for index, batch in enumerate(batches):
        order = [baseline, candidate] if index % 2 == 0 else [candidate, baseline]
        for name in order:
            seconds, cuda_mb, syncs = timed_step(trainers[name], batch, device)
            if index >= warmup:
                results[name]["seconds"].append(seconds)
                results[name]["cuda_mb"].append(cuda_mb)
                results[name]["syncs"].append(syncs)
    state = {n: training_state_bytes(t, batches[0]) / 2 ** 20 for n, t in trainers.items()}
    head_seconds = mi_head_seconds(trainers[candidate], batches[0], device)
    paired = [c / b for b, c in zip(results[baseline]["seconds"], results[candidate]["seconds"])]
    summary = {
        "configuration": configuration,
        "patch_size": trainers[baseline].configuration_manager.patch_size,
        "batch_size": trainers[baseline].batch_size,
        "steps": steps,
        "baseline_median_s": statistics.median(results[baseline]["seconds"]),
        "imnet_median_s": statistics.median(results[candidate]["seconds"]),
        "time_ratio_median_of_pairs": statistics.median(paired),
        "time_ratio_iqr": [float(np.percentile(paired, 25)), float(np.percentile(paired, 75))],
        "baseline_state_mb": state[baseline],
        "imnet_state_mb": state[candidate],
        "state_ratio": state[candidate] / state[baseline],
        "mi_head_ms": 1000 * head_seconds,
        "mi_head_share_of_baseline_step": head_seconds / statistics.median(results[baseline]["seconds"]),
        "mi_head_parameters": sum(p.numel() for p in trainers[candidate].unwrapped_network().mi_head.parameters()),
    }
    if device.type == "cuda":
        summary.update(baseline_peak_cuda_mb=max(results[baseline]["cuda_mb"]),
                       imnet_peak_cuda_mb=max(results[candidate]["cuda_mb"]),
                       peak_cuda_ratio=max(results[candidate]["cuda_mb"]) / max(results[baseline]["cuda_mb"]),
                       baseline_syncs_per_step=statistics.mean(results[baseline]["syncs"]),
                       imnet_syncs_per_step=statistics.mean(results[candidate]["syncs"]))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configurations", nargs="+", default=["3d_fullres", "2d", "large_3d"])
    parser.add_argument("--steps", type=int, default=10, help="measured steps per trainer (large_3d: a third)")
    parser.add_argument("--large-steps", type=int, default=None, help="measured steps for large_3d (default: a third "
                        "of --steps)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--baseline", default="nnUNetTrainer_full")
    parser.add_argument("--candidate", default="nnUNetTrainerIMNet_full")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    plans, dataset_json = plan_hippocampus(args.raw)
    add_large_plan(plans)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.candidate} vs {args.baseline}", flush=True)
    rows = []
    for configuration in args.configurations:
        steps = (args.large_steps or max(2, args.steps // 3)) if configuration == "large_3d" else args.steps
        row = compare(plans, dataset_json, configuration, steps, args.warmup, device, args.baseline, args.candidate)
        rows.append(row)
        print(json.dumps(row), flush=True)
    cuda_columns = " peak CUDA ratio | syncs/step |" if device.type == "cuda" else ""
    print("\n| plan | patch x batch | baseline s/step | IMNet s/step | time ratio (median of pairs, IQR) | "
          "training memory MB baseline / IMNet | memory ratio | MI head alone ms (share of step) |" + cuda_columns)
    for r in rows:
        cuda = (f" {r['peak_cuda_ratio']:.4f} | {r['baseline_syncs_per_step']:.1f} / {r['imnet_syncs_per_step']:.1f} |"
                if device.type == "cuda" else "")
        print(f"| {r['configuration']} | {r['patch_size']} x {r['batch_size']} | {r['baseline_median_s']:.3f} | "
              f"{r['imnet_median_s']:.3f} | {r['time_ratio_median_of_pairs']:.4f} "
              f"({r['time_ratio_iqr'][0]:.3f}-{r['time_ratio_iqr'][1]:.3f}) | {r['baseline_state_mb']:.1f} / "
              f"{r['imnet_state_mb']:.1f} | {r['state_ratio']:.4f} | {r['mi_head_ms']:.2f} "
              f"({100 * r['mi_head_share_of_baseline_step']:.3f} %) |{cuda}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
