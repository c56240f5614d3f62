"""Batches of unlabelled patches: nnU-Net's own data loader and training augmentation on images without labels.

The stream of unlabelled batches has its own random state, derived from a seed and the number of batches drawn, so
that (1) it never draws from the global random state that nnU-Net's labelled loader samples from (in the main
process when ``nnUNet_n_proc_DA=0``): the labelled patches are exactly those ``nnUNetTrainer`` would draw, and (2) a
training continued with ``--c`` continues the unlabelled stream where the checkpoint left it.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator, List, Sequence

import numpy as np
import torch
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2


class UnlabelledDataset(nnUNetDatasetBlosc2):
    """Prepared unlabelled cases (see ``nnunetv2_imnet.unlabelled``). The ``seg`` that ``load_case`` returns is the
    image's own nonzero mask, and no case has foreground locations, so nnU-Net's loader crops uniformly at random."""

    def load_case(self, identifier: str):
        data, nonzero_mask, previous_stage, properties = super().load_case(identifier)
        properties.setdefault("class_locations", {})
        return data, nonzero_mask, previous_stage, properties


@contextmanager
def isolated_random_state(seed: Sequence[int]) -> Iterator[None]:
    """Run the block with Python's, NumPy's and torch's (CPU) global random state seeded from ``seed``, and give
    every one of them back afterwards exactly as it was."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    words = np.random.SeedSequence(list(seed)).generate_state(3)
    with torch.random.fork_rng(devices=[]):
        try:
            random.seed(int(words[0]))
            np.random.seed(int(words[1]))
            torch.manual_seed(int(words[2]))
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class UnlabelledDataLoader(nnUNetDataLoader):
    """``nnUNetDataLoader`` without foreground oversampling, returning only ``data`` and ``keys``.

    Batch ``k`` of augmenter worker ``thread_id`` is drawn from the random state ``(seed..., thread_id, k)``; ``k``
    starts at ``first_batch``.
    """

    def __init__(self, data: UnlabelledDataset, batch_size: int, patch_size: Sequence[int],
                 final_patch_size: Sequence[int], label_manager, transforms, seed: Sequence[int],
                 first_batch: int = 0) -> None:
        super().__init__(data, batch_size, patch_size, final_patch_size, label_manager,
                         oversample_foreground_percent=0.0, sampling_probabilities=None, pad_sides=None,
                         probabilistic_oversampling=False, transforms=transforms)
        self.seed: List[int] = [int(s) for s in seed]
        self.batches_drawn = first_batch

    def generate_train_batch(self) -> dict:
        with isolated_random_state([*self.seed, self.thread_id, self.batches_drawn]):
            batch = super().generate_train_batch()
        self.batches_drawn += 1
        return {"data": batch["data"], "keys": batch["keys"]}


def rank_batch_size(global_batch_size: int, world_size: int, rank: int) -> int:
    """This rank's share of a global batch, split over DDP ranks as nnU-Net splits the labelled batch: every rank
    gets ``global // world``, and the first ``global % world`` ranks one more."""
    if global_batch_size < world_size:
        raise ValueError(f"{global_batch_size} unlabelled patches per step cannot be split over {world_size} DDP "
                         f"ranks; give at least one per rank.")
    return global_batch_size // world_size + (1 if rank < global_batch_size % world_size else 0)
