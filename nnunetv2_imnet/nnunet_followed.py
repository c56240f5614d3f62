"""Where this package follows nnU-Net's code instead of calling it, in one place.

A few methods repeat what an nnU-Net method does (and then add to it): IMNet's train step, the crash-safe
checkpoint, the progress plot with extra panels, the unlabelled loader beside nnU-Net's. If an nnU-Net upgrade
changes the method followed, the baseline and IMNet could silently train differently, which would invalidate every
comparison. Each entry names nnU-Net's source, ours, what to re-check, and a fingerprint of nnU-Net's source as of
the version we follow; ``tests/test_nnunet_followed.py`` fails, naming the entry, when the installed nnU-Net's source
differs. After re-checking (and adapting our code), print the new fingerprints with
``python -m nnunetv2_imnet.nnunet_followed`` and update them here.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass
from typing import List

#: the nnU-Net version whose source the fingerprints below were taken from
NNUNET_VERSION = "2.8.1"
TRAINER = "nnunetv2.training.nnUNetTrainer.nnUNetTrainer.nnUNetTrainer"


@dataclass(frozen=True)
class Followed:
    nnunet: str  # module path, then attribute path, of nnU-Net's function or method
    ours: str  # what of ours follows it
    recheck: str  # what to re-check when it changes
    fingerprint: str  # sha256 of its source (first 16 hex digits) in NNUNET_VERSION


FOLLOWED = (
    Followed(f"{TRAINER}.train_step", "training/imnet_trainer.py: nnUNetTrainerIMNet.train_step, _backward_and_step; "
             "training/clipping.py", "autocast, loss, backward, grad scaler, clipping norm and what the step returns "
             "must stay nnU-Net's, plus the MI term", "c8993de84c8c419f"),
    Followed(f"{TRAINER}.save_checkpoint", "training/measured.py: nnUNetTrainerMeasured.save_checkpoint",
             "the checkpoint's entries (nnU-Net's load_checkpoint and predictor read them)", "de4f196c42e6bcf5"),
    Followed("nnunetv2.training.logging.nnunet_logger.LocalLogger.plot_progress_png",
             "training/panel_logger.py: PanelLocalLogger.plot_progress_png", "nnU-Net's three panels of progress.png",
             "2263f9df8da44479"),
    Followed(f"{TRAINER}.get_dataloaders", "training/unlabelled_trainer.py: _unlabelled_augmenter",
             "the transforms' arguments and the augmenter settings per nnUNet_n_proc_DA, as for the labelled loader",
             "5f59e2b907cfa2d1"),
    Followed(f"{TRAINER}._set_batch_size_and_oversample", "training/unlabelled_loader.py: rank_batch_size",
             "how DDP splits a global batch over ranks", "830f5205b6f05e0f"),
    Followed("nnunetv2.training.dataloading.data_loader.nnUNetDataLoader.generate_train_batch",
             "training/unlabelled_loader.py: UnlabelledDataLoader", "the batch keys, and that all its randomness comes "
             "from the global random states that isolated_random_state seeds and restores", "0a430703c66ec9b8"),
    Followed("nnunetv2.preprocessing.preprocessors.default_preprocessor.DefaultPreprocessor.run_case_save",
             "unlabelled.py: _preprocess_case", "the files it writes (<case>.b2nd, <case>_seg.b2nd, <case>.pkl) and "
             "that it accepts no segmentation", "2021027938e7f10f"),
    Followed(f"{TRAINER}.__init__", "training/budgets.py: NNUNET_EPOCHS, NNUNET_ITERATIONS_PER_EPOCH, "
             "NNUNET_VAL_ITERATIONS_PER_EPOCH", "nnU-Net's default schedule (1000 epochs of 250 iterations)",
             "0ae31d90095f54c1"),
)


def resolve(dotted: str):
    """The object at ``module.attribute.path``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            target = getattr(target, name)
        return target
    raise ImportError(f"Cannot import any module of {dotted!r}.")


def fingerprint(dotted: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(dotted)).encode()).hexdigest()[:16]


def changed() -> List[Followed]:
    """The entries whose nnU-Net source differs from the version we follow."""
    return [entry for entry in FOLLOWED if fingerprint(entry.nnunet) != entry.fingerprint]


if __name__ == "__main__":
    for entry in FOLLOWED:
        print(f"{fingerprint(entry.nnunet)}  {entry.nnunet}")
