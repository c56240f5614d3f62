"""NSD on hand-made masks whose surface distances are known, file reading, and the registered metrics on
the cases of nnU-Net's summary.json.

Boundary = foreground pixels with a face-neighbour outside the mask (MONAI's edges). A 4x4 square has 12 of them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.evaluation.evaluate_predictions import compute_metrics, save_summary_json
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from nnunetv2_imnet.benchmark.metrics import (METRICS, case_id, case_nsd, evaluated_cases, normalized_surface_dice,
                                              read_segmentation)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecated internal argument


def _square(shift: int = 0) -> np.ndarray:
    """4x4 square at rows 2-5, cols 2-5, moved ``shift`` rows down."""
    image = np.zeros((10, 9), dtype=np.uint8)
    image[2 + shift:6 + shift, 2:6] = 1
    return image


def _cube(shift: int = 0) -> np.ndarray:
    """4x4x4 cube at 2-5 in every axis, moved ``shift`` voxels along axis 0."""
    image = np.zeros((10, 8, 8), dtype=np.uint8)
    image[2 + shift:6 + shift, 2:6, 2:6] = 1
    return image


def _nsd(prediction: np.ndarray, reference: np.ndarray, spacing, tolerance) -> float:
    return normalized_surface_dice(prediction, reference, [1], spacing, tolerance)[1]


# Square A (rows 2-5) vs A moved one row down, B (rows 3-6); 12 boundary pixels each.
# Coinciding boundary pixels: (3,2) (3,5) (4,2) (4,5) (5,2) (5,5) -> 6 of 12 on each side.
# The other 6 of A: row 2 (4 pixels) lies one row above B's top row 3; (5,3), (5,4) lie one row above B's
# (6,3), (6,4) and one column beside B's (5,2), (5,5). B mirrors this.
def test_square_shifted_one_pixel_matches_hand_count() -> None:
    assert _nsd(_square(1), _square(), (1.0, 1.0), 0.5) == pytest.approx(12 / 24)  # only coinciding pixels
    assert _nsd(_square(1), _square(), (1.0, 1.0), 1.0) == pytest.approx(1.0)  # tolerance is inclusive (<=)


def test_anisotropic_spacing_along_the_shift_stretches_the_distance() -> None:
    # rows 3 mm apart: A's row 2 (4 pixels) is now 3 mm from B; (5,3), (5,4) still 1 mm (along columns).
    # Likewise for B's row 6: 8 of 12 within 1 mm on each side.
    assert _nsd(_square(1), _square(), (3.0, 1.0), 1.0) == pytest.approx(16 / 24)
    assert _nsd(_square(1), _square(), (3.0, 1.0), 3.0) == pytest.approx(1.0)
    # columns 3 mm apart instead: every pixel still has a partner 1 mm away along the rows
    assert _nsd(_square(1), _square(), (1.0, 3.0), 1.0) == pytest.approx(1.0)


# Cube A (slabs 2-5 along axis 0) vs B (slabs 4-7): 64 - 8 = 56 boundary voxels each. A's boundary per slab:
# slab 2 face (16), slab 3 ring (12), slab 4 ring (12), slab 5 face (16); B's: slab 4 face, 5 ring, 6 ring, 7 face.
# Coinciding: slab 4 ring (12) + slab 5 ring (12) = 24. At 1 voxel: A's slab 3 ring (from B's slab 4 face) and
# the 4 inner voxels of A's slab 5 face (beside B's slab 5 ring, above B's slab 4 face). At 2 voxels: A's slab 2
# face. B mirrors A.
def test_cube_shifted_two_voxels() -> None:
    assert _nsd(_cube(2), _cube(), (1.0, 1.0, 1.0), 0.5) == pytest.approx(24 / 56)
    assert _nsd(_cube(2), _cube(), (1.0, 1.0, 1.0), 1.5) == pytest.approx((24 + 12 + 4) / 56)
    assert _nsd(_cube(2), _cube(), (1.0, 1.0, 1.0), 2.5) == pytest.approx(1.0)


def test_cube_shift_along_a_3_mm_axis() -> None:
    # slab 3 ring is now 3 mm away; slab 5's inner voxels stay 1 mm away (in plane); slab 2 face is 6 mm away
    assert _nsd(_cube(2), _cube(), (3.0, 1.0, 1.0), 1.0) == pytest.approx((24 + 4) / 56)
    assert _nsd(_cube(2), _cube(), (3.0, 1.0, 1.0), 5.9) == pytest.approx((24 + 4 + 12) / 56)
    assert _nsd(_cube(2), _cube(), (3.0, 1.0, 1.0), 6.0) == pytest.approx(1.0)


def test_identical_masks_give_one() -> None:
    assert _nsd(_square(), _square(), (0.7, 1.3), 0.1) == 1.0
    assert _nsd(_cube(), _cube(), (2.0, 1.0, 1.0), 0.1) == 1.0


def test_empty_masks_follow_nnunet_dice_conventions() -> None:
    empty = np.zeros_like(_square())
    assert math.isnan(_nsd(empty, empty, (1.0, 1.0), 1.0))
    assert _nsd(empty, _square(), (1.0, 1.0), 1.0) == 0.0
    assert _nsd(_square(), empty, (1.0, 1.0), 1.0) == 0.0


def test_labels_are_scored_separately_and_keep_their_order() -> None:
    reference = _square() * 2  # only label 2
    result = normalized_surface_dice(_square(1) * 2, reference, [3, 2, 1], (1.0, 1.0), 0.5)
    assert list(result) == [3, 2, 1]
    assert math.isnan(result[3]) and result[2] == pytest.approx(0.5) and math.isnan(result[1])


def test_region_is_the_union_of_its_labels() -> None:
    reference = _square()
    reference[2:6, 4:6] = 2  # left half label 1, right half label 2
    prediction = _square()
    prediction[2:6, 2:4] = 2  # halves swapped: every label wrong, the union exact
    result = normalized_surface_dice(prediction, reference, [1, 2, (1, 2)], (1.0, 1.0), 0.5)
    assert result[1] < 1.0 and result[2] < 1.0
    assert result[(1, 2)] == 1.0


def test_tolerance_per_label() -> None:
    prediction, reference = _square(1), _square()
    prediction[7, 7] = reference[7, 7] = 2
    result = normalized_surface_dice(prediction, reference, [1, 2], (1.0, 1.0), {1: 1.0, 2: 0.5})
    assert result == {1: pytest.approx(1.0), 2: 1.0}
    with pytest.raises(ValueError, match="no tolerance for label 2"):
        normalized_surface_dice(prediction, reference, [1, 2], (1.0, 1.0), {1: 1.0})


@pytest.mark.parametrize("tolerance", [0.0, -1.0, {1: -2.0}, math.nan])
def test_non_positive_tolerance_is_rejected(tolerance) -> None:
    with pytest.raises(ValueError, match="tolerance_mm for label 1 is"):
        _nsd(_square(), _square(), (1.0, 1.0), tolerance)


def test_spacing_must_match_the_dimensions() -> None:
    with pytest.raises(ValueError, match=r"spacing \(1.0, 1.0, 1.0\) has 3 values but the arrays have 2"):
        _nsd(_square(), _square(), (1.0, 1.0, 1.0), 1.0)


def _write(array: np.ndarray, path: Path, spacing_xyz=(1.0, 2.0, 3.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path))
    return path


def test_read_segmentation_returns_spacing_in_numpy_axis_order(tmp_path: Path) -> None:
    array, spacing = read_segmentation(_write(_cube(), tmp_path / "case.nii.gz"))
    np.testing.assert_array_equal(array, _cube())
    assert spacing == (3.0, 2.0, 1.0)


def test_case_nsd_uses_the_reference_spacing(tmp_path: Path) -> None:
    # SimpleITK spacing (1, 1, 3) is numpy (3, 1, 1): the 2-voxel shift along axis 0 is 6 mm
    reference = _write(_cube(), tmp_path / "ref.nii.gz", (1.0, 1.0, 3.0))
    prediction = _write(_cube(2), tmp_path / "pred.nii.gz", (1.0, 1.0, 3.0))
    assert case_nsd(prediction, reference, [1], 6.0) == {1: pytest.approx(1.0)}
    assert case_nsd(prediction, reference, [1], 5.9)[1] < 1.0


def test_case_nsd_names_both_shapes_and_files(tmp_path: Path) -> None:
    reference = _write(_cube(), tmp_path / "ref.nii.gz")
    prediction = _write(_cube()[:, :, :4], tmp_path / "pred.nii.gz")
    with pytest.raises(ValueError, match=r"pred\.nii\.gz has shape \(10, 8, 4\).*ref\.nii\.gz has shape \(10, 8, 8\)"):
        case_nsd(prediction, reference, [1], 1.0)


def test_case_id_strips_the_file_ending() -> None:
    assert case_id("/data/hippocampus_001.nii.gz") == "hippocampus_001"
    assert case_id("slice_7.png") == "slice_7"
    assert case_id("case.v2.nrrd") == "case.v2"
    assert case_id("case_1.seg.nii.gz", file_ending=".seg.nii.gz") == "case_1"
    with pytest.raises(ValueError, match="'case_1.xyz' does not end with"):
        case_id("case_1.xyz")


def _summary_json(tmp_path: Path) -> Path:
    """A summary.json written by nnU-Net's own evaluation code for two cases, labels 1, 2 and region (1, 2)."""
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    reference = _square()
    reference[2:6, 4:6] = 2
    regions = [1, 2, (1, 2)]
    results = []
    for name, prediction in [("case_a", reference), ("case_b", np.where(reference == 2, 0, reference))]:
        ref_file = _write(reference[None], tmp_path / "ref" / f"{name}.nii.gz")
        pred_file = _write(prediction[None], tmp_path / "pred" / f"{name}.nii.gz")
        results.append(compute_metrics(str(ref_file), str(pred_file), SimpleITKIO(), regions))
    means = {r: {"Dice": float(np.nanmean([c["metrics"][r]["Dice"] for c in results]))} for r in regions}
    summary = {"metric_per_case": results, "mean": means, "foreground_mean": {"Dice": 0.0}}
    recursive_fix_for_json_export(summary)
    save_summary_json(summary, str(tmp_path / "summary.json"))
    return tmp_path / "summary.json"


REGIONS = {"1": 1, "2": 2, "(1, 2)": (1, 2)}


def test_registered_metrics_read_nnunet_summary_json(tmp_path: Path) -> None:
    summary = _summary_json(tmp_path)
    assert '"(1, 2)"' in summary.read_text()  # nnU-Net's key for a region
    cases = evaluated_cases(summary, REGIONS, parameters={"nsd_tolerance_mm": 1.0})
    assert list(cases) == ["case_a", "case_b"]
    dice = {case: METRICS["dice"].per_case(evaluated) for case, evaluated in cases.items()}
    assert dice["case_a"] == {"(1, 2)": 1.0, "1": 1.0, "2": 1.0}
    assert dice["case_b"]["1"] == 1.0 and dice["case_b"]["2"] == 0.0
    assert dice["case_b"]["(1, 2)"] == pytest.approx(2 * 8 / (8 + 16))
    # case_b misses label 2 entirely: its NSD is 0, and the region (1, 2) keeps the boundary rows 2 and 5 only
    nsd = METRICS["nsd"].per_case(cases["case_b"])
    assert nsd["1"] == 1.0 and nsd["2"] == 0.0 and 0.0 < nsd["(1, 2)"] < 1.0


def test_registered_metrics_declare_their_direction() -> None:
    assert {name: metric.higher_is_better for name, metric in METRICS.items()} == {"dice": True, "nsd": True}
    assert all(name == metric.name for name, metric in METRICS.items())


def test_summary_dice_keeps_nan_and_other_json_is_rejected(tmp_path: Path) -> None:
    entry = {"prediction_file": "/p/c.nii.gz", "reference_file": "/r/c.nii.gz", "metrics": {"3": {"Dice": math.nan}}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"metric_per_case": [entry]}))
    [(case, evaluated)] = evaluated_cases(path, {"3": 3}, parameters={"nsd_tolerance_mm": 1.0}).items()
    assert case == "c" and math.isnan(METRICS["dice"].per_case(evaluated)["3"])
    path.write_text(json.dumps({"mean": {}}))
    with pytest.raises(ValueError, match="no 'metric_per_case'"):
        evaluated_cases(path, {"3": 3}, parameters={"nsd_tolerance_mm": 1.0})
