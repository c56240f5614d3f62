"""The benchmark's noise model and the noisy copies of raw datasets it derives."""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_imnet.benchmark.noise import (
    COMPLETE_MARKER, NOISE_KINDS, add_noise, case_seed, condition_name, corrupt_cases, corrupt_image_file,
    derive_noisy_dataset, noise_sigma, parse_condition,
)
from nnunetv2_imnet.benchmark.runner import BenchmarkRunner
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec

SPACING = (0.75, 0.5, 2.5)
ORIGIN = (-12.5, 3.25, 40.0)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)


def _half_and_half(value: float = 100.0) -> np.ndarray:
    """A large image, half zeros (their rician noise is the noise floor) and half ``value`` (the signal)."""
    image = np.zeros((2, 500, 500))
    image[1] = value
    return image


# ---------------------------------------------------------------------------------------------- noise model
def test_sigma_uses_the_signal_above_the_10th_percentile_or_the_mask() -> None:
    assert noise_sigma(_half_and_half(), snr=10) == pytest.approx(10.0)
    ramp = np.arange(1, 101, dtype=float)  # voxels above the 10th percentile (10.9): 11..100, mean 55.5
    assert noise_sigma(ramp, snr=5) == pytest.approx(55.5 / 5)
    assert noise_sigma(ramp, snr=5, signal_mask=ramp <= 10) == pytest.approx(5.5 / 5)
    assert noise_sigma(np.full((4, 4), 30.0), snr=3) == pytest.approx(10.0)  # constant: all of it is signal


def test_gaussian_noise_has_the_target_snr() -> None:
    rng = np.random.default_rng(1)
    image = rng.uniform(50, 150, (100, 100, 100))
    noisy = add_noise(image, "gaussian", 10.0, rng)
    expected_sigma = image[image > np.percentile(image, 10)].mean() / 10.0
    assert noisy.dtype == np.float32
    assert np.std(noisy - image) == pytest.approx(expected_sigma, rel=0.02)
    assert np.mean(noisy - image) == pytest.approx(0.0, abs=0.01 * expected_sigma)


def test_rician_noise_floor_and_high_snr_signal() -> None:
    image = _half_and_half(100.0)
    noisy = add_noise(image, "rician", 20.0, np.random.default_rng(2))
    sigma = 100.0 / 20.0
    assert noisy[0].min() >= 0
    assert noisy[0].mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.02)  # Rayleigh mean
    assert noisy[1].mean() == pytest.approx(100.0, rel=0.005)  # bias sigma^2 / (2 * 100) = 0.125 is tiny
    assert noisy[1].std() == pytest.approx(sigma, rel=0.03)


def test_same_seed_same_noise_other_seed_other_noise() -> None:
    image = np.random.default_rng(0).uniform(10, 20, (16, 16, 16))
    for kind in NOISE_KINDS:
        first = add_noise(image, kind, 5.0, np.random.default_rng(3))
        assert np.array_equal(first, add_noise(image, kind, 5.0, np.random.default_rng(3)))
        assert not np.allclose(first, add_noise(image, kind, 5.0, np.random.default_rng(4)))


@pytest.mark.parametrize("snr", [0, -2.0, math.nan, math.inf, "10"])
def test_invalid_snr_is_refused(snr: object) -> None:
    with pytest.raises(ValueError, match=r"SNR must be a finite number > 0.*got"):
        add_noise(np.ones((4, 4)), "gaussian", snr, np.random.default_rng(0))


def test_unknown_kind_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'poisson'.*gaussian.*rician"):
        add_noise(np.ones((4, 4)), "poisson", 10.0, np.random.default_rng(0))


def test_image_without_positive_signal_needs_a_mask() -> None:
    with pytest.raises(ValueError, match="signal_mask"):
        noise_sigma(np.zeros((8, 8)), 10.0)
    with pytest.raises(ValueError, match="shape"):
        noise_sigma(np.ones((8, 8)), 10.0, signal_mask=np.ones((4, 4), dtype=bool))


# ---------------------------------------------------------------------------------------------- names and seeds
def test_parse_condition() -> None:
    assert parse_condition("rician:10") == ("rician", 10.0)
    assert parse_condition("gaussian:2.5") == ("gaussian", 2.5)


@pytest.mark.parametrize("text", ["rician", "rician:", "rician:ten", "rician:0", "rician:-5", "rician:inf",
                                  "speckle:10", "clean", "10:rician"])
def test_parse_condition_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match=rf"{text!r}.*KIND:SNR.*gaussian.*rician"):
        parse_condition(text)


def test_condition_names() -> None:
    assert condition_name("rician", 10) == "rician_snr10"
    assert condition_name("gaussian", 2.5) == "gaussian_snr2p5"
    assert condition_name(None) == "clean"


def test_case_seed_is_stable_across_processes() -> None:
    assert case_seed(0, "hippocampus_001", 0) == 1848309334  # a salted hash() would change from run to run
    assert case_seed(7, "drive_21", 2) == 260006846
    assert len({case_seed(0, "a", 0), case_seed(0, "a", 1), case_seed(1, "a", 0), case_seed(0, "b", 0)}) == 4


# ---------------------------------------------------------------------------------------------- files
def _write_nifti(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=array.ndim == 3), str(path))


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_corrupt_image_file_keeps_the_geometry(tmp_path: Path) -> None:
    src, dst = tmp_path / "case_0000.nii.gz", tmp_path / "out" / "case_0000.nii.gz"
    _write_nifti(src, np.random.default_rng(0).integers(20, 200, (6, 7, 8)).astype(np.uint8))
    corrupt_image_file(src, dst, "rician", 10.0, seed=5)
    source, noisy = sitk.ReadImage(str(src)), sitk.ReadImage(str(dst))
    assert noisy.GetSpacing() == source.GetSpacing() == SPACING
    assert noisy.GetOrigin() == source.GetOrigin() == ORIGIN
    assert noisy.GetDirection() == source.GetDirection() == DIRECTION
    assert noisy.GetPixelID() == sitk.sitkFloat32
    assert not np.array_equal(_read(dst), _read(src))
    again = tmp_path / "again.nii.gz"
    corrupt_image_file(src, again, "rician", 10.0, seed=5)
    assert np.array_equal(_read(again), _read(dst))


@pytest.mark.parametrize("channels", [1, 3])
def test_png_stays_uint8_and_in_range(tmp_path: Path, channels: int) -> None:
    shape = (40, 30, channels) if channels > 1 else (40, 30)
    pixels = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    src, dst = tmp_path / "img_0000.png", tmp_path / "noisy_0000.png"
    _write_png(src, pixels)
    corrupt_image_file(src, dst, "gaussian", 2.0, seed=0)
    noisy = sitk.ReadImage(str(dst))
    assert noisy.GetNumberOfComponentsPerPixel() == channels
    assert noisy.GetPixelID() == (sitk.sitkVectorUInt8 if channels > 1 else sitk.sitkUInt8)
    values = sitk.GetArrayFromImage(noisy)
    assert values.shape == pixels.shape
    assert values.min() == 0 and values.max() == 255  # SNR 2 pushes values past both ends: clipped
    assert not np.array_equal(values, pixels)


def test_corrupt_cases_writes_the_source_names_with_noise_per_channel(tmp_path: Path) -> None:
    image = np.full((5, 5, 5), 50.0, dtype=np.float32)
    files = {case: [tmp_path / "in" / f"{case}_{c:04d}.nii.gz" for c in range(2)] for case in ("a", "b")}
    for paths in files.values():
        for path in paths:
            _write_nifti(path, image)
    corrupt_cases(files, tmp_path / "out", "gaussian", 5.0, seed=0)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(p.name for paths in files.values() for p in paths)
    noisy = [_read(tmp_path / "out" / name) for name in written]
    assert all(not np.array_equal(noisy[0], other) for other in noisy[1:])  # other case or channel: other noise


# ---------------------------------------------------------------------------------------------- datasets
def _fake_dataset(root: Path, name: str, ending: str, channel_names: Dict[str, str], cases: Dict[str, str],
                  write_image, write_label, image_shape, label_shape) -> Path:
    """A tiny raw dataset: ``cases`` maps case -> split ("Tr"/"Ts"), one image file per channel entry unless
    the image holds the channels itself (``image_shape`` ends in 3), plus an auxiliary folder to ignore."""
    folder = root / name
    rng = np.random.default_rng(0)
    files_per_case = 1 if image_shape[-1] == 3 else len(channel_names)
    for case, split in cases.items():
        for channel in range(files_per_case):
            write_image(folder / f"images{split}" / f"{case}_{channel:04d}{ending}",
                        rng.integers(30, 220, image_shape).astype(np.uint8))
        write_label(folder / f"labels{split}" / f"{case}{ending}", rng.integers(0, 2, label_shape).astype(np.uint8))
    (folder / "masks_original").mkdir()
    (folder / "masks_original" / "mask.txt").write_text("not part of nnU-Net's layout")
    num_training = sum(split == "Tr" for split in cases.values())
    (folder / "dataset.json").write_text(json.dumps({
        "name": name.split("_", 1)[1], "description": "fake", "channel_names": channel_names,
        "labels": {"background": 0, "thing": 1}, "numTraining": num_training, "file_ending": ending}))
    return folder


@pytest.fixture
def nifti_dataset(tmp_path: Path) -> Path:
    return _fake_dataset(tmp_path / "raw", "Dataset004_Hippo", ".nii.gz", {"0": "T1", "1": "T2"},
                         {"hippo_001": "Tr", "hippo_002": "Tr", "hippo_003": "Tr", "hippo_118": "Ts"},
                         _write_nifti, _write_nifti, (6, 7, 8), (6, 7, 8))


@pytest.fixture
def png_dataset(tmp_path: Path) -> Path:
    """Like Dataset202_DRIVE: RGB in one PNG per case (channel_names R, G, B), imagesTs with labelsTs."""
    return _fake_dataset(tmp_path / "raw", "Dataset202_DRIVE", ".png", {"0": "R", "1": "G", "2": "B"},
                         {"drive_21": "Tr", "drive_22": "Tr", "drive_01": "Ts"},
                         _write_png, _write_png, (24, 20, 3), (24, 20))


def _files(folder: Path) -> Dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dataset", ["nifti_dataset", "png_dataset"])
def test_derived_dataset_layout(dataset: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    source: Path = request.getfixturevalue(dataset)
    target = derive_noisy_dataset(source, tmp_path / "derived", 904, "rician", 10, seed=3)
    assert target == tmp_path / "derived" / f"Dataset904_{source.name.split('_', 1)[1]}Rician10"
    before, after = _files(source), _files(target)
    assert "masks_original/mask.txt" not in after
    assert sorted(after) == sorted([n for n in before if not n.startswith("masks_original/")] + [COMPLETE_MARKER])
    for name in before:
        if name.startswith("labels"):
            assert after[name] == before[name]
        elif name.startswith("images"):
            assert not np.array_equal(_read(target / name), _read(source / name))
            assert sitk.ReadImage(str(target / name)).GetSpacing() == sitk.ReadImage(str(source / name)).GetSpacing()
    assert not any(p.is_symlink() for p in target.rglob("*"))
    derived_json, source_json = json.loads(after["dataset.json"]), json.loads(before["dataset.json"])
    assert derived_json["noise"] == {"kind": "rician", "snr": 10.0, "seed": 3, "source": source.name}
    assert "rician noise at SNR 10" in derived_json["description"]
    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        assert derived_json[key] == source_json[key]


def test_derived_datasets_pass_nnunet_integrity_check(nifti_dataset: Path, png_dataset: Path,
                                                      tmp_path: Path) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    for index, source in enumerate((nifti_dataset, png_dataset)):
        target = derive_noisy_dataset(source, tmp_path / "derived", 900 + index, "gaussian", 5, seed=0)
        verify_dataset_integrity(str(target), num_processes=1)


def test_derivation_is_deterministic_and_idempotent(nifti_dataset: Path, tmp_path: Path) -> None:
    first = derive_noisy_dataset(nifti_dataset, tmp_path / "a", 904, "gaussian", 2.5, seed=1)
    assert first.name == "Dataset904_HippoGaussian2p5"
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    assert derive_noisy_dataset(nifti_dataset, tmp_path / "a", 904, "gaussian", 2.5, seed=1) == first
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == stamps  # nothing was rewritten
    other = derive_noisy_dataset(nifti_dataset, tmp_path / "b", 904, "gaussian", 2.5, seed=1)
    assert _files(other) == _files(first)
    reseeded = derive_noisy_dataset(nifti_dataset, tmp_path / "c", 904, "gaussian", 2.5, seed=2)
    name = "imagesTr/hippo_001_0000.nii.gz"
    assert not np.array_equal(_read(reseeded / name), _read(first / name))


def test_interrupted_derivation_is_redone(nifti_dataset: Path, tmp_path: Path) -> None:
    target = derive_noisy_dataset(nifti_dataset, tmp_path, 904, "rician", 5, seed=0)
    complete = _files(target)
    (target / COMPLETE_MARKER).unlink()
    (target / "labelsTr" / "hippo_002.nii.gz").unlink()
    assert _files(derive_noisy_dataset(nifti_dataset, tmp_path, 904, "rician", 5, seed=0)) == complete


def test_conflicting_settings_are_refused(nifti_dataset: Path, tmp_path: Path) -> None:
    derive_noisy_dataset(nifti_dataset, tmp_path, 904, "rician", 5, seed=0)
    with pytest.raises(ValueError, match=r"already exists.*'seed': 0.*'seed': 1.*delete it"):
        derive_noisy_dataset(nifti_dataset, tmp_path, 904, "rician", 5, seed=1)
    with pytest.raises(ValueError, match=r"id of Dataset904_HippoRician10 is already used.*Dataset904_HippoRician5"):
        derive_noisy_dataset(nifti_dataset, tmp_path, 904, "rician", 10, seed=0)
    foreign = tmp_path / "Dataset905_HippoRician5"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone else's")
    with pytest.raises(ValueError, match="already exists"):
        derive_noisy_dataset(nifti_dataset, tmp_path, 905, "rician", 5, seed=0)


def test_source_without_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "Dataset004_Empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Dataset004_Empty has no dataset.json"):
        derive_noisy_dataset(tmp_path / "Dataset004_Empty", tmp_path / "out", 904, "rician", 10)


def test_source_links_are_copied_not_linked(nifti_dataset: Path, tmp_path: Path) -> None:
    """The benchmark links source datasets into its own nnUNet_raw and derives from the link."""
    link = tmp_path / "benchmark_raw" / nifti_dataset.name
    link.parent.mkdir()
    os.symlink(nifti_dataset, link, target_is_directory=True)
    target = derive_noisy_dataset(link, link.parent, 904, "rician", 10)
    assert not any(p.is_symlink() for p in target.rglob("*"))
    assert json.loads((target / "dataset.json").read_text())["noise"]["source"] == "Dataset004_Hippo"


def test_the_runner_times_a_derivation_once_and_keeps_its_cost_when_it_finds_it_done(synthetic_raw, tmp_path) -> None:
    spec = BenchmarkSpec(raw=str(synthetic_raw), work=str(tmp_path / "work"), datasets=[990], budget="cpu",
                         device="cpu", trainers=["nnUNetTrainer"], folds=[0], train_noise=[("rician", 5.0)]).validate()
    runner = BenchmarkRunner(spec, out=io.StringIO())
    runner.prepare_raw()
    stage = f"derive dataset {spec.noisy_datasets()[0].dataset_id}"
    timings = json.loads(runner.timings_file.read_text())
    assert stage in timings
    runner.timings_file.write_text(json.dumps({**timings, stage: 123.4}))  # what a long derivation recorded
    BenchmarkRunner(spec, out=io.StringIO()).prepare_raw()  # a resumed run finds the dataset derived
    assert json.loads(runner.timings_file.read_text())[stage] == 123.4
