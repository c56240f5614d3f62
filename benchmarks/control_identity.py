"""Does the weight-zero control train the same network as nnU-Net? Checked on real batches, step by step.

``nnUNetTrainerIMNet_lambda0`` is the benchmark's control: the IMNet code path with its critic trained and no MI
gradient reaching the network. If, from the same weights and batches, its segmentation network follows
nnU-Net's, then its difference from ``nnUNetTrainer`` in a benchmark is pure training variance (an A/A test).
This script builds ``nnUNetTrainer``, the control and ``nnUNetTrainerIMNet`` (budget ``cpu1k`` unless told) from
one seed on a preprocessed dataset, draws ``--steps`` batches from nnU-Net's own training data loader once, feeds
every trainer the same batches and prints, per trainer, the segmentation network's gradient norm per step, the MI
head's, and how often nnU-Net's gradient clipping (norm 12, taken over all of ``self.network``'s parameters, the
MI head's included) binds. The control's and nnU-Net's network gradient norms must agree exactly.

    nnUNet_preprocessed=WORK/clean/nnUNet_preprocessed nnUNet_results=/tmp/ci_results nnUNet_n_proc_DA=0 \\
        python benchmarks/control_identity.py --dataset Dataset004_Hippocampus --steps 30

Writes nothing but nnU-Net's trainer folders under ``$nnUNet_results`` (use a scratch folder) and, with
``--json``, the per-step norms.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunetv2_imnet.training.catalogue import ALL_TRAINERS

CLIP_NORM = 12.0  # nnUNetTrainer.train_step's clip_grad_norm_ threshold (nnU-Net 2.8.1)


def gradient_norm(parameters: Sequence[torch.nn.Parameter]) -> float:
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in parameters if p.grad is not None))


def run(trainer_name: str, plans: dict, dataset_json: dict, configuration: str, fold: int, seed: int,
        batches: List[dict]) -> Dict[str, List[float]]:
    """Train ``trainer_name`` on ``batches`` from ``seed``'s weights, as its own ``train_step`` does, and return the
    per-step gradient norms (network, MI head, and all of ``self.network`` as clipping sees it)."""
    torch.manual_seed(seed)
    trainer = ALL_TRAINERS[trainer_name](dict(plans, continue_training=False), configuration, fold, dataset_json,
                                         device=torch.device("cpu"))
    trainer.initialize()
    trainer.network.train()
    norms: Dict[str, List[float]] = {"network": [], "mi_head": [], "clipped_total": []}
    original_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        named = list(trainer.network.named_parameters())
        norms["network"].append(gradient_norm([p for n, p in named if not n.startswith("mi_head.")]))
        norms["mi_head"].append(gradient_norm([p for n, p in named if n.startswith("mi_head.")]))
        total = original_clip(parameters, max_norm, *args, **kwargs)
        norms["clipped_total"].append(float(total))
        return total

    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        trainer.on_train_epoch_start()
        for batch in batches:
            trainer.train_step(batch)
    finally:
        torch.nn.utils.clip_grad_norm_ = original_clip
    return norms


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="folder name under $nnUNet_preprocessed")
    parser.add_argument("--plans", default="nnUNetPlans")
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--budget", default="cpu1k")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the per-step norms here")
    args = parser.parse_args(argv)
    if "nnUNet_preprocessed" not in os.environ or "nnUNet_results" not in os.environ:
        raise SystemExit("set nnUNet_preprocessed (the dataset's parent) and nnUNet_results (a scratch folder)")
    folder = Path(os.environ["nnUNet_preprocessed"]) / args.dataset
    plans = load_json(str(folder / f"{args.plans}.json"))
    dataset_json = load_json(str(folder / "dataset.json"))
    names = [f"{base}_{args.budget}" for base in ("nnUNetTrainer", "nnUNetTrainerIMNet_lambda0", "nnUNetTrainerIMNet")]

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    loader_trainer = ALL_TRAINERS[names[0]](dict(plans, continue_training=False), args.configuration, args.fold,
                                            dataset_json, device=torch.device("cpu"))
    loader_trainer.initialize()
    loader_trainer.on_train_start()  # builds nnU-Net's data loaders (single process with nnUNet_n_proc_DA=0)
    batches = [next(loader_trainer.dataloader_train) for _ in range(args.steps)]

    results = {name: run(name, plans, dataset_json, args.configuration, args.fold, args.seed, batches)
               for name in names}
    reference = np.array(results[names[0]]["network"])
    for name, norms in results.items():
        network, total = np.array(norms["network"]), np.array(norms["clipped_total"])
        deviation = float(np.max(np.abs(network - reference) / reference))
        print(f"{name}: network gradient norm median {np.median(network):.3f} (max {network.max():.3f}), MI head "
              f"{np.median(norms['mi_head']):.3f} (max {max(norms['mi_head']):.3f}); clipping bound in "
              f"{int((total > CLIP_NORM).sum())} of {len(total)} steps; largest relative deviation from "
              f"{names[0]}'s network gradient norm {deviation:.2e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
