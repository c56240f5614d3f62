"""The synthetic demo dataset: nnU-Net raw layout, both structures in every case, deterministic, valid."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_imnet.benchmark.synthetic import COMPLETE_MARKER, make_synthetic_dataset


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("raw"))


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_layout(demo: Path) -> None:
    assert demo.name == "Dataset990_IMNetDemo"
    dataset_json = json.loads((demo / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "MRI"}
    assert dataset_json["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    assert dataset_json["numTraining"] == 16 and dataset_json["file_ending"] == ".nii.gz"
    images, labels = sorted((demo / "imagesTr").iterdir()), sorted((demo / "labelsTr").iterdir())
    assert len(images) == len(labels) == 16
    assert [p.name.replace("_0000", "") for p in images] == [p.name for p in labels]
    image = sitk.ReadImage(str(images[0]))
    assert image.GetSize() == (32, 40, 32) and image.GetSpacing() == (1.0, 1.0, 1.0)  # (x, y, z) of shape (z, y, x)


def test_both_structures_in_every_case_and_touching(demo: Path) -> None:
    for path in sorted((demo / "labelsTr").iterdir()):
        labels = _read(path)
        assert set(np.unique(labels)) == {0, 1, 2}, path.name
        anterior = labels == 1
        neighbours = np.zeros_like(anterior)
        for axis in range(3):
            neighbours |= np.roll(anterior, 1, axis) | np.roll(anterior, -1, axis)
        assert (neighbours & (labels == 2)).any(), f"{path.name}: the structures do not touch"


def test_structures_are_brighter_than_the_background_but_noisy(demo: Path) -> None:
    image, labels = _read(demo / "imagesTr" / "demo_000_0000.nii.gz"), _read(demo / "labelsTr" / "demo_000.nii.gz")
    background = image[labels == 0]
    for label in (1, 2):
        contrast = image[labels == label].mean() - background.mean()
        assert 0.5 * background.std() < contrast < 3 * background.std()


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    small = {"num_cases": 2, "shape": (20, 24, 20)}
    first = make_synthetic_dataset(tmp_path / "a", seed=4, **small)
    same = make_synthetic_dataset(tmp_path / "b", seed=4, **small)
    other = make_synthetic_dataset(tmp_path / "c", seed=5, **small)
    for name in ("imagesTr/demo_001_0000.nii.gz", "labelsTr/demo_001.nii.gz"):
        assert np.array_equal(_read(first / name), _read(same / name))
        assert not np.array_equal(_read(first / name), _read(other / name))


def test_idempotent_and_refuses_other_parameters(tmp_path: Path) -> None:
    folder = make_synthetic_dataset(tmp_path, num_cases=2, shape=(20, 20, 20))
    marker = (folder / COMPLETE_MARKER).stat().st_mtime_ns
    assert make_synthetic_dataset(tmp_path, num_cases=2, shape=(20, 20, 20)) == folder
    assert (folder / COMPLETE_MARKER).stat().st_mtime_ns == marker
    with pytest.raises(ValueError, match=r"generated with .*'num_cases': 2.*'num_cases': 3.*delete it"):
        make_synthetic_dataset(tmp_path, num_cases=3, shape=(20, 20, 20))


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"at least 16 voxels.*\(8, 40, 32\)"):
        make_synthetic_dataset(tmp_path, shape=(8, 40, 32))
    with pytest.raises(ValueError, match="num_cases must be at least 1, got 0"):
        make_synthetic_dataset(tmp_path, num_cases=0)


def test_passes_nnunet_integrity_check(demo: Path) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(demo), num_processes=1)
