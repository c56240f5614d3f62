"""A metric's parameter (NSD's tolerance) is declared with the metric: the spec, the command line and the cache
file names follow from that one entry."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunetv2_imnet import cli
from nnunetv2_imnet.benchmark.metrics import METRIC_PARAMETERS, METRICS, NSD_TOLERANCE
from nnunetv2_imnet.benchmark.spec import BenchmarkSpec


def test_the_registry_declares_nsd_tolerance_and_keeps_its_cache_names() -> None:
    assert METRIC_PARAMETERS == {"nsd_tolerance_mm": NSD_TOLERANCE} and METRICS["nsd"].parameter is NSD_TOLERANCE
    assert METRICS["nsd"].cache_name({"nsd_tolerance_mm": 1.0}) == "nsd_1mm.json"  # archived caches stay valid
    assert METRICS["nsd"].cache_name({"nsd_tolerance_mm": 0.5}) == "nsd_0.5mm.json"
    assert METRICS["dice"].cache_name({"nsd_tolerance_mm": 1.0}) is None


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    (tmp_path / "raw" / "Dataset004_Hippocampus").mkdir(parents=True)
    return tmp_path / "raw"


@pytest.mark.parametrize("value, expected", [(None, 1.0), ("2.5", 2.5)])
def test_the_option_comes_from_the_registry(raw: Path, tmp_path: Path, value, expected) -> None:
    arguments = ["benchmark", "--raw", str(raw), "--work", str(tmp_path / "work"), "-d", "4"]
    args = cli.build_parser().parse_args(arguments + (["--nsd-tolerance", value] if value else []))
    assert cli._spec_from_args(args).metric_parameters == {"nsd_tolerance_mm": expected}


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_non_positive_tolerance_stops_the_benchmark(raw: Path, tmp_path: Path, value: str) -> None:
    with pytest.raises(SystemExit, match=f"error: nsd_tolerance_mm must be a positive, finite number, got {value}"):
        cli.main(["benchmark", "--raw", str(raw), "--work", str(tmp_path / "work"), "-d", "4", "--budget", "smoke",
                  "--device", "cpu", "--dry-run", "--nsd-tolerance", value])


def test_a_spec_saved_before_metric_parameters_still_loads(raw: Path, tmp_path: Path) -> None:
    spec = BenchmarkSpec(raw=str(raw), work=str(tmp_path / "work"), datasets=[4], budget="smoke", device="cpu")
    values = {key: value for key, value in json.loads(spec.save().read_text()).items() if key != "metric_parameters"}
    path = tmp_path / "old_spec.json"
    path.write_text(json.dumps({**values, "nsd_tolerance_mm": 2.0}))
    assert BenchmarkSpec.load(path).metric_parameters == {"nsd_tolerance_mm": 2.0}
