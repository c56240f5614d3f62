"""A small, noisy, hippocampus-like 3D demo dataset, so the benchmark and its tests run without real data.

Each case holds two touching ellipsoids of random size, position and orientation (labels 1 "anterior" and
2 "posterior", loosely a hippocampus head and body) in a smoothly textured background. The structures are only
moderately brighter than the background, so the Rician noise (applied with :mod:`nnunetv2_imnet.benchmark.noise`)
really makes segmentation harder, which is the situation IM-Net is meant for.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from nnunetv2_imnet.benchmark.noise import add_noise, case_seed
from nnunetv2_imnet.naming import dataset_folder_name, dataset_folders, image_file_name

DATASET_NAME = "IMNetDemo"
LABELS = {"background": 0, "anterior": 1, "posterior": 2}
#: written last: its presence (with the same parameters) means the dataset is complete
COMPLETE_MARKER = ".synthetic_complete.json"
BACKGROUND = 100.0
#: mean intensity of labels 1 and 2 above the background: about 2-3 noise sigmas at the default SNR of 8
CONTRAST = {1: 30.0, 2: 20.0}
TEXTURE = 10.0  # amplitude of the smooth background texture
MIN_SIZE = 16


def make_synthetic_dataset(raw_root: Path, dataset_id: int = 990, num_cases: int = 16,
                           shape: Sequence[int] = (32, 40, 32), snr: float = 8.0, seed: int = 0) -> Path:
    """Write ``Dataset{id}_IMNetDemo`` (nnU-Net raw layout, 1 mm spacing) under ``raw_root`` and return it.

    ``shape`` is the array shape (z, y, x). The same arguments always give the same files; calling it again
    with them returns at once, with others raises ValueError (delete the folder to regenerate it).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < MIN_SIZE:
        raise ValueError(f"shape must be 3 sizes of at least {MIN_SIZE} voxels (room for both structures), "
                         f"got {shape}.")
    if num_cases < 1:
        raise ValueError(f"num_cases must be at least 1, got {num_cases}.")
    target = Path(raw_root) / dataset_folder_name(dataset_id, DATASET_NAME)
    others = [p.name for p in dataset_folders(raw_root, dataset_id) if p.name != target.name]
    if others:
        raise ValueError(f"Dataset id {dataset_id} is already used by {others} in {raw_root}; choose another id.")
    parameters = {"num_cases": int(num_cases), "shape": list(shape), "snr": float(snr), "seed": int(seed)}
    if _is_complete(target, parameters):
        return target
    for folder in ("imagesTr", "labelsTr"):
        shutil.rmtree(target / folder, ignore_errors=True)
        (target / folder).mkdir(parents=True)
    for index in range(num_cases):
        case = f"demo_{index:03d}"
        image, labels = synthetic_case(shape, snr, np.random.default_rng(case_seed(seed, case, 0)))
        _write(image, target / "imagesTr" / image_file_name(case, 0, ".nii.gz"))
        _write(labels, target / "labelsTr" / f"{case}.nii.gz")
    _write_dataset_json(target, parameters)
    (target / COMPLETE_MARKER).write_text(json.dumps(parameters))
    return target


def synthetic_case(shape: Tuple[int, int, int], snr: float,
                   rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One noisy image (float32) and its labels (uint8)."""
    labels = _structures(shape, rng)
    texture = gaussian_filter(rng.standard_normal(shape), sigma=3.0)
    clean = BACKGROUND + TEXTURE * texture / texture.std()
    for label, contrast in CONTRAST.items():
        clean += contrast * (labels == label)
    clean = gaussian_filter(clean, sigma=0.6)  # partial-volume blur at the edges
    return add_noise(clean, "rician", snr, rng), labels


def _structures(shape: Tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Label 2 is an ellipsoid that continues label 1 along its long axis, overlapping it a little, so the two
    touch; label 1 wins where they overlap."""
    size = min(shape)
    semi_axes = np.column_stack([rng.uniform(0.17, 0.25, 2), rng.uniform(0.09, 0.14, (2, 2))]) * size
    rotation = _random_rotation(rng)
    axis = rotation[:, 0]  # the long axis of both
    offsets = np.outer([-0.5, 0.5], axis) * 0.85 * semi_axes[:, 0].sum()
    half_extents = np.sqrt(((rotation[None] * semi_axes[:, None, :]) ** 2).sum(axis=-1))  # bounding boxes
    low = -(offsets - half_extents).min(axis=0)
    high = np.array(shape) - 1 - (offsets + half_extents).max(axis=0)
    centres = rng.uniform(low, high) + offsets
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(np.float64)
    labels = np.zeros(shape, dtype=np.uint8)
    for label in (2, 1):
        local = (grid - centres[label - 1]) @ rotation  # coordinates along the ellipsoid's own axes
        labels[((local / semi_axes[label - 1]) ** 2).sum(axis=-1) <= 1] = label
    return labels


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation (QR of a Gaussian matrix with the sign ambiguity removed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(path), useCompression=True)


def _is_complete(target: Path, parameters: Dict[str, object]) -> bool:
    marker = target / COMPLETE_MARKER
    if not marker.is_file():
        return False
    recorded = json.loads(marker.read_text())
    if recorded != parameters:
        raise ValueError(f"{target} was generated with {recorded}, not the requested {parameters}; delete it "
                         f"or choose another dataset id.")
    return True


def _write_dataset_json(target: Path, parameters: Dict[str, object]) -> None:
    dataset_json = {
        "name": DATASET_NAME,
        "description": "Synthetic IM-Net demo: two touching ellipsoids (anterior, posterior) in a textured "
                       f"background with Rician noise at SNR {parameters['snr']:g} (mean signal / sigma).",
        "channel_names": {"0": "MRI"},
        "labels": LABELS,
        "numTraining": parameters["num_cases"],
        "file_ending": ".nii.gz",
        "synthetic": parameters,
    }
    (target / "dataset.json").write_text(json.dumps(dataset_json, indent=4))
