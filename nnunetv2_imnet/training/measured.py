"""The baseline side of every comparison: nnU-Net's trainer, unchanged in what it trains, plus

- per-epoch cost logging (train-step seconds per iteration and peak memory), so that baseline and IMNet costs
  are measured the same way in the same runs, and
- crash-safe checkpoints (write to a temporary file, then rename), so a kill during a write never destroys the
  checkpoint that ``--c`` continues from, and
- the C heap's free pages returned to the OS after every epoch (``release_heap_every_epoch``), so that allocator
  fragmentation does not creep into the memory a long run holds (see ``heap.py``).
"""
from __future__ import annotations

import os
import resource
import time
from typing import Any, Dict, List

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from nnunetv2_imnet.naming import dataset_id
from nnunetv2_imnet.training.checkpoint import atomic_torch_save
from nnunetv2_imnet.training.heap import release_free_heap_memory
from nnunetv2_imnet.training.panel_logger import PanelLocalLogger

#: the cost panel of progress.png: time and memory, each on its own axis
COST_PANEL = {"seconds per training iteration": ("train_seconds_per_iteration",),
              "peak memory (MB)": ("peak_memory_mb",)}
COST_KEYS = sum(COST_PANEL.values(), ())


class nnUNetTrainerMeasured(nnUNetTrainer):
    """``nnUNetTrainer`` with cost logging and crash-safe checkpoints; trains exactly like it."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.logger.local_logger = PanelLocalLogger(self.logger.local_logger.verbose)
        self.logger.local_logger.add_panel("training cost", COST_PANEL)
        self._epoch_train_start = 0.0
        #: return free heap pages to the OS after every epoch (glibc only; ~0.1 s to release 1 GB, once per epoch)
        self.release_heap_every_epoch = True

    def initialize(self) -> None:
        if not self.was_initialized:
            self._check_preprocessed_data()
        super().initialize()

    def _check_preprocessed_data(self) -> None:
        """nnU-Net fails obscurely (inferring a dataset class from no files) when a configuration was planned
        but never preprocessed; say what is missing and the command that makes it."""
        folder = self.preprocessed_dataset_folder
        if folder is None or (os.path.isdir(folder) and any(
                not name.endswith((".pkl", ".json")) for name in os.listdir(folder))):
            return
        dataset = self.plans_manager.dataset_name
        raise FileNotFoundError(
            f"No preprocessed data for configuration '{self.configuration_name}' of {dataset} in {folder}. "
            f"Preprocess it first: nnUNetv2_preprocess -d {dataset_id(dataset)} -c {self.configuration_name} "
            f"-plans_name {self.plans_manager.plans_name}")

    def unwrapped_network(self) -> torch.nn.Module:
        """``self.network`` without the DDP and ``torch.compile`` wrappers."""
        module = self._network_without_ddp()
        return module._orig_mod if isinstance(module, OptimizedModule) else module

    @property
    def network_is_compiled(self) -> bool:
        """Whether nnU-Net's ``initialize`` wrapped the network in ``torch.compile``."""
        return isinstance(self._network_without_ddp(), OptimizedModule)

    def _network_without_ddp(self) -> torch.nn.Module:
        return self.network.module if isinstance(self.network, DistributedDataParallel) else self.network

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._epoch_train_start = time.perf_counter()

    def on_train_epoch_end(self, train_outputs: List[dict]) -> None:
        # each train step ends by copying its loss to the host, so the steps are complete here
        seconds = (time.perf_counter() - self._epoch_train_start) / max(1, len(train_outputs))
        super().on_train_epoch_end(train_outputs)
        self.logger.log("train_seconds_per_iteration", seconds, self.current_epoch)
        self.logger.log("peak_memory_mb", self._peak_memory_mb(), self.current_epoch)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if self.release_heap_every_epoch:
            release_free_heap_memory()

    def _peak_memory_mb(self) -> float:
        """Peak CUDA memory allocated this epoch on GPU; on CPU the process's peak resident set size."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def checkpoint_extras(self) -> Dict[str, Any]:
        """Entries that subclasses store in the checkpoint beside nnU-Net's own."""
        return {}

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint content plus ``checkpoint_extras()``, written atomically (nnU-Net's is not)."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        # the entries of nnUNetTrainer.save_checkpoint in nnU-Net 2.8.1 (guarded: nnunet_followed.py)
        checkpoint = {
            "network_weights": self.unwrapped_network().state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            **self.checkpoint_extras(),
        }
        atomic_torch_save(checkpoint, filename)
