"""Train-step cost of nnUNetTrainerIMNet against nnUNetTrainer, side by side in one run: time, memory and the
operators each step dispatches. ``--candidate`` names another trainer to compare, e.g. the unlabelled IMNet,
whose steps also take as many unlabelled patches as labelled ones (synthetic, made once, as the labelled batches).

Both trainers are built by nnU-Net from the same plans (network, loss, optimizer, AMP and torch.compile exactly as
in real training) and fed the same batches, alternating step by step (and alternating which goes first) so that
drift in machine load hits both equally. Prints per-plan medians, the IMNet/baseline ratios and, as a noise-free
attribution, the time of the MI head alone (forward + backward on the plan's bottleneck) as a share of the step.

Operators: the profiler's CPU-side events of one train step (every dispatched operator, autograd node and, on a
GPU, CUDA runtime call) and, on a GPU, the CUDA device events (kernels, copies). Unlike times they do not depend
on the machine's load, so the MI term's cost can be checked on a CPU: where a step is bound by dispatch, as small
nnU-Net patches are on a GPU, every extra operator costs wall time.

    python benchmarks/overhead.py                       # the committed Hippocampus plans: 3d_fullres, 2d, large_3d
    python benchmarks/overhead.py --preprocessed $nnUNet_preprocessed/Dataset004_Hippocampus
    python benchmarks/overhead.py --plans nnUNetPlans.json --configurations 3d_fullres --pairs 20 --compile off
    python benchmarks/overhead.py --raw ../shared/data  # plan the raw Hippocampus data first (needs SimpleITK)
    python benchmarks/overhead.py --candidate nnUNetTrainerIMNet_Unlabelled_full  # + unlabelled patches per step

Plans: an nnU-Net plans file (``--plans``, with the ``dataset.json`` beside it unless ``--dataset-json`` says
otherwise), a preprocessed dataset folder (``--preprocessed``), nnU-Net's planner run on the raw Hippocampus data
(``--raw``), or by default the plans nnU-Net 2.8.1 made for the shared Hippocampus data, committed in
``benchmarks/plans``. Only the plans are read, never images. ``large_3d`` is nnU-Net's
3d_fullres template at a 128^3 patch, batch 2, 6 stages (what nnU-Net plans for a 1 mm isotropic whole-organ
volume). Batches are synthetic (the step cost does not depend on the content).

Memory: on CUDA the peak allocated memory of each step. PyTorch keeps no peak statistics for CPU tensors, so on
CPU (and also on CUDA) the script reports what a step holds at its peak, the end of the forward pass: the tensors
saved for backward plus parameters and optimizer state, each storage counted once.
"""
from __future__ import annotations

import argparse
import atexit
import copy
import itertools
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
from typing import Dict, Iterator, List, Optional, Tuple

WORK = Path(tempfile.mkdtemp(prefix="imnet_overhead_"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
for _name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ[_name] = str(WORK / _name)  # nnU-Net reads these at import time

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from nnunetv2_imnet.training.catalogue import ALL_TRAINERS  # noqa: E402
from nnunetv2_imnet.training.imnet_trainer import COMPILE_MI_HEAD_VARIABLE  # noqa: E402
from nnunetv2_imnet.training.network import find_bottleneck  # noqa: E402
from nnunetv2_imnet.training.unlabelled_trainer import nnUNetTrainerIMNet_Unlabelled  # noqa: E402
from nnunetv2_imnet.unlabelled import Manifest, unlabelled_folder  # noqa: E402

DATASET = "Dataset004_Hippocampus"
#: what nnU-Net 2.8.1 plans for the shared Hippocampus data (nnUNetv2_plan_experiment -d 4)
HIPPOCAMPUS_PLANS = Path(__file__).resolve().parent / "plans" / DATASET / "nnUNetPlans.json"
COMPILE = {"on": "true", "off": "false"}  # nnU-Net's nnUNet_compile; "nnunet" leaves nnU-Net's default (CUDA: on)


def load_plans(plans: Optional[Path], dataset_json: Optional[Path], preprocessed: Optional[Path],
               raw: Optional[Path]) -> Tuple[dict, dict]:
    """Plans and dataset.json from a plans file, a preprocessed dataset folder, by planning the raw data, or else
    the committed Hippocampus plans."""
    if preprocessed is not None:
        plans = plans or preprocessed / "nnUNetPlans.json"
        dataset_json = dataset_json or preprocessed / "dataset.json"
    if plans is None and raw is not None:
        return plan_hippocampus(raw)
    plans = plans or HIPPOCAMPUS_PLANS
    dataset_json = dataset_json or plans.parent / "dataset.json"
    for path, what in ((plans, "plans file"), (dataset_json, "dataset.json")):
        if not path.is_file():
            raise SystemExit(f"No {what} at {path}. Give --plans PATH/nnUNetPlans.json (and --dataset-json when "
                             f"dataset.json is not beside it) or --preprocessed $nnUNet_preprocessed/DatasetXXX_Name.")
    return json.loads(plans.read_text()), json.loads(dataset_json.read_text())


def plan_hippocampus(raw: Path) -> Tuple[dict, dict]:
    """nnU-Net's own fingerprint and plans for the real data (no preprocessing needed; reads images)."""
    from nnunetv2_imnet.benchmark.commands import with_console_scripts  # only here: planning needs SimpleITK

    env = with_console_scripts(dict(os.environ, nnUNet_raw=str(raw.resolve())))
    env.pop("nnUNet_n_proc_DA", None)
    for command in (["nnUNetv2_extract_fingerprint", "-d", "4", "-np", "2"], ["nnUNetv2_plan_experiment", "-d", "4"]):
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    folder = WORK / "nnUNet_preprocessed" / DATASET
    return (json.loads((folder / "nnUNetPlans.json").read_text()),
            json.loads((raw / DATASET / "dataset.json").read_text()))


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
    folder = WORK / "nnUNet_preprocessed" / plans["dataset_name"] / \
        plans["configurations"][configuration]["data_identifier"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "placeholder.b2nd").touch()  # nnU-Net infers its dataset class from the files it finds here
    plans = copy.deepcopy(plans)
    plans["continue_training"] = False
    trainer_class = ALL_TRAINERS[name]
    if issubclass(trainer_class, nnUNetTrainerIMNet_Unlabelled):
        write_synthetic_manifest(plans, configuration, dataset_json)
    trainer = trainer_class(plans, configuration, 0, dataset_json, device)
    trainer.initialize()
    trainer.network.train()
    if isinstance(trainer, nnUNetTrainerIMNet_Unlabelled):
        trainer.dataloader_unlabelled = synthetic_unlabelled_batches(trainer, seed=1)
    return trainer


def write_synthetic_manifest(plans: dict, configuration: str, dataset_json: dict) -> None:
    """The manifest an unlabelled trainer checks in ``initialize``, for plans whose images are never read here."""
    settings = plans["configurations"][configuration]
    folder = unlabelled_folder(WORK / "nnUNet_preprocessed" / plans["dataset_name"], settings["data_identifier"])
    folder.mkdir(parents=True, exist_ok=True)
    Manifest(plans["plans_name"], configuration, settings["data_identifier"], [float(s) for s in settings["spacing"]],
             len(dataset_json["channel_names"]), ["synthetic"], "synthetic").write(folder)


def synthetic_unlabelled_batches(trainer, seed: int) -> Iterator[dict]:
    """Unlabelled batches as the trainer's loader delivers them (one per step, as many patches as planned), made
    once: the step cost does not depend on their content, and this leaves their augmentation out of the step as
    the labelled batches' is."""
    generator = torch.Generator().manual_seed(seed)
    size = trainer.global_unlabelled_batch_size()
    data = torch.randn([size, trainer.num_image_channels, *trainer.configuration_manager.patch_size],
                       generator=generator)
    return itertools.repeat({"data": data})


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
    features, image = mi_head_inputs(trainer, batch, device)
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


def count_events(run, device: torch.device, repeats: int = 2) -> Tuple[float, float]:
    """Profiler events per call of ``run``: CPU-side (operators, autograd nodes, CUDA runtime calls) and CUDA
    device events (kernels, copies; 0 on CPU). The mean over ``repeats`` calls after one unprofiled call."""
    run()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(repeats):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = [e for e in profiler.events() if getattr(e, "activity_type", None) != "overhead"]
    cpu = sum(e.device_type == DeviceType.CPU for e in events)
    cuda = sum(e.device_type == DeviceType.CUDA for e in events)
    return cpu / repeats, cuda / repeats


def mi_head_inputs(trainer, batch: dict, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random bottleneck features (requiring a gradient) and the batch's image, as the MI head gets them."""
    network = trainer.unwrapped_network()
    bottleneck = find_bottleneck(network.segmentation_network, trainer.num_input_channels,
                                 trainer.configuration_manager.patch_size)
    features = torch.randn(trainer.batch_size, bottleneck.channels, *bottleneck.grid, device=device,
                           requires_grad=True)
    return features, batch["data"].to(device)[:, :network.image_channels]


def mi_head_mode(trainer) -> str:
    """How the MI head runs: compiled with the network, compiled on its own, or eagerly."""
    if trainer.network_is_compiled:
        return "with network"
    return "alone" if trainer.unwrapped_network().mi_head.is_compiled_alone else "eager"


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
    events = {n: count_events(lambda t=t: t.train_step(batches[0]), device) for n, t in trainers.items()}
    head = trainers[candidate].unwrapped_network().mi_head
    features, image = mi_head_inputs(trainers[candidate], batches[0], device)
    head_events = count_events(lambda: head(features, image).loss.backward(), device)
    head.zero_grad(set_to_none=True)
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
        "compiled": trainers[candidate].network_is_compiled,
        "mi_head_mode": mi_head_mode(trainers[candidate]),
        "baseline_cpu_events": events[baseline][0],
        "imnet_cpu_events": events[candidate][0],
        "cpu_event_ratio": events[candidate][0] / events[baseline][0],
        "mi_head_cpu_events": head_events[0],
    }
    if device.type == "cuda":
        summary.update(baseline_peak_cuda_mb=max(results[baseline]["cuda_mb"]),
                       imnet_peak_cuda_mb=max(results[candidate]["cuda_mb"]),
                       peak_cuda_ratio=max(results[candidate]["cuda_mb"]) / max(results[baseline]["cuda_mb"]),
                       baseline_syncs_per_step=statistics.mean(results[baseline]["syncs"]),
                       imnet_syncs_per_step=statistics.mean(results[candidate]["syncs"]),
                       baseline_cuda_events=events[baseline][1], imnet_cuda_events=events[candidate][1],
                       cuda_event_ratio=events[candidate][1] / max(events[baseline][1], 1.0),
                       mi_head_cuda_events=head_events[1])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("plans (one of; default: benchmarks/plans/Dataset004_Hippocampus)")
    source.add_argument("--plans", type=Path, default=None, help="an nnU-Net plans file, e.g. nnUNetPlans.json")
    source.add_argument("--dataset-json", type=Path, default=None, help="default: dataset.json beside --plans")
    source.add_argument("--preprocessed", type=Path, default=None,
                        help="a preprocessed dataset folder holding nnUNetPlans.json and dataset.json")
    source.add_argument("--raw", type=Path, default=None, help="plan anew: an nnU-Net raw folder holding "
                        "Dataset004_Hippocampus (e.g. ../shared/data; needs SimpleITK)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configurations", nargs="+", default=["3d_fullres", "2d", "large_3d"],
                        help="configurations of the plans, and large_3d (derived from 3d_fullres)")
    parser.add_argument("--pairs", "--steps", type=int, default=10, help="measured step pairs per configuration")
    parser.add_argument("--large-pairs", type=int, default=None, help="measured pairs for large_3d (default: a "
                        "third of --pairs)")
    parser.add_argument("--batch-size", type=int, default=None, help="replace the planned batch size (quick checks; "
                        "the operator counts do not depend on it)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured pairs first (torch.compile compiles here)")
    parser.add_argument("--compile", choices=["nnunet", *COMPILE], default="nnunet",
                        help="torch.compile the network: nnU-Net's default (on for CUDA, off for CPU), on or off")
    parser.add_argument("--eager-mi-head", action="store_true", help="where nnU-Net runs the network eagerly, run "
                        "the MI head eagerly too instead of compiling it alone (NNUNETV2_IMNET_COMPILE_MI_HEAD=0)")
    parser.add_argument("--baseline", default="nnUNetTrainer_full")
    parser.add_argument("--candidate", default="nnUNetTrainerIMNet_full")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    if args.compile in COMPILE:
        os.environ["nnUNet_compile"] = COMPILE[args.compile]  # nnU-Net reads it in initialize()
    if args.eager_mi_head:
        os.environ[COMPILE_MI_HEAD_VARIABLE] = "0"  # the trainer reads it in __init__
    plans, dataset_json = load_plans(args.plans, args.dataset_json, args.preprocessed, args.raw)
    if "large_3d" in args.configurations:
        add_large_plan(plans)
    unknown = sorted(set(args.configurations) - set(plans["configurations"]))
    if unknown:
        raise SystemExit(f"Configuration(s) {unknown} are not in the plans; they hold {sorted(plans['configurations'])}"
                         f" (and large_3d, derived from 3d_fullres).")
    for configuration in args.configurations if args.batch_size else []:
        plans["configurations"][configuration]["batch_size"] = args.batch_size
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, compile {args.compile}; "
          f"{args.candidate} vs {args.baseline}", flush=True)
    rows = []
    for configuration in args.configurations:
        pairs = (args.large_pairs or max(2, args.pairs // 3)) if configuration == "large_3d" else args.pairs
        row = compare(plans, dataset_json, configuration, pairs, args.warmup, device, args.baseline, args.candidate)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_tables(rows, device)
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "device_name": device_name(device),
                                         "torch": torch.__version__, "compile": args.compile, "rows": rows}, indent=1))


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def print_tables(rows: List[dict], device: torch.device) -> None:
    cuda = device.type == "cuda"
    print("\n| plan | patch x batch | compiled | baseline s/step | IMNet s/step | time ratio (median of pairs, IQR) | "
          "training memory MB baseline / IMNet | memory ratio | MI head alone ms (share of step) |" +
          (" peak CUDA ratio | syncs/step |" if cuda else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if cuda else ""))
    for r in rows:
        extra = (f" {r['peak_cuda_ratio']:.4f} | {r['baseline_syncs_per_step']:.1f} / "
                 f"{r['imnet_syncs_per_step']:.1f} |" if cuda else "")
        print(f"| {r['configuration']} | {r['patch_size']} x {r['batch_size']} | {r['compiled']} | "
              f"{r['baseline_median_s']:.4f} | {r['imnet_median_s']:.4f} | {r['time_ratio_median_of_pairs']:.4f} "
              f"({r['time_ratio_iqr'][0]:.3f}-{r['time_ratio_iqr'][1]:.3f}) | {r['baseline_state_mb']:.1f} / "
              f"{r['imnet_state_mb']:.1f} | {r['state_ratio']:.4f} | {r['mi_head_ms']:.2f} "
              f"({100 * r['mi_head_share_of_baseline_step']:.3f} %) |{extra}")
    print("\nOperators per train step (profiler events; CPU-side: operators, autograd nodes, CUDA runtime calls)")
    print("| plan | network compiled | MI head compiled | CPU-side baseline | CPU-side IMNet | ratio | MI head alone |"
          + (" CUDA baseline | CUDA IMNet | ratio | MI head alone |" if cuda else ""))
    print("|---|---|---|---|---|---|---|" + ("---|---|---|---|" if cuda else ""))
    for r in rows:
        extra = (f" {r['baseline_cuda_events']:.0f} | {r['imnet_cuda_events']:.0f} | {r['cuda_event_ratio']:.4f} | "
                 f"{r['mi_head_cuda_events']:.0f} |" if cuda else "")
        print(f"| {r['configuration']} | {r['compiled']} | {r['mi_head_mode']} | {r['baseline_cpu_events']:.0f} | "
              f"{r['imnet_cpu_events']:.0f} | {r['cpu_event_ratio']:.4f} | {r['mi_head_cpu_events']:.0f} |{extra}")


if __name__ == "__main__":
    sys.exit(main())
