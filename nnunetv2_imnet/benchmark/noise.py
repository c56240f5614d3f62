"""Image noise for the robustness benchmark: IM-Net's premise is that it segments noisy images better.

SNR convention (the usual one in MRI): ``SNR = mean intensity of the signal region / sigma``, where sigma is the
standard deviation of the Gaussian noise (for Rician noise: of each of its two Gaussian components).

Signal region: the voxels above the image's 10th intensity percentile, unless a ``signal_mask`` is given. This
leaves out most of the air or the dark border around a retina (all of it where it is a constant value that covers
more than a tenth of the image) without a threshold per dataset, while tightly cropped images that are mostly
tissue (hippocampus crops, EM slices) keep 90 % of their voxels; on DRIVE 81-90 % of the pixels count as signal.
A constant image has nothing above its 10th percentile; then the whole image is the signal. Sigma is computed per
image and, for multi-channel files such as RGB PNGs, per channel, so every channel of every case gets the same SNR.

Noise is drawn from a generator seeded by ``case_seed(seed, case, channel)``, so a noisy dataset is the same on
every machine and in every run, whatever order the cases are processed in.
"""
from __future__ import annotations

import json
import math
import shutil
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunetv2_imnet import naming

CLEAN = naming.CLEAN
#: the percentile above which voxels count as signal when no mask is given
SIGNAL_PERCENTILE = 10.0
#: file formats that store integer pixels only: noisy images are rounded and clipped to the source's dtype
INTEGER_ONLY_ENDINGS = (".png", ".bmp")
#: written last into a derived dataset: its presence means the derivation finished
COMPLETE_MARKER = ".noise_complete.json"


# ---------------------------------------------------------------------------------------------- the noise model
def _check_kind(kind: str) -> None:
    if kind not in NOISE_KINDS:
        raise ValueError(f"Unknown noise kind {kind!r}; use one of {NOISE_KINDS}.")


def _check_snr(snr: float) -> None:
    try:
        valid = math.isfinite(snr) and snr > 0
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f"SNR must be a finite number > 0 (mean signal / sigma), got {snr!r}.")


def noise_sigma(image: np.ndarray, snr: float, signal_mask: Optional[np.ndarray] = None) -> float:
    """The noise standard deviation that gives ``image`` the requested SNR (see the module docstring)."""
    _check_snr(snr)
    values = np.asarray(image, dtype=np.float64)
    if signal_mask is None:
        region = values > np.percentile(values, SIGNAL_PERCENTILE)
        if not region.any():
            region = np.ones(values.shape, dtype=bool)
    else:
        region = np.asarray(signal_mask, dtype=bool)
        if region.shape != values.shape or not region.any():
            raise ValueError(f"signal_mask must have the image's shape {values.shape} and select at least one "
                             f"voxel; got shape {region.shape} with {int(region.sum())} voxels selected.")
    mean = float(values[region].mean())
    if not math.isfinite(mean) or mean <= 0:
        raise ValueError(f"The signal region's mean intensity is {mean}, so an SNR is undefined; pass a "
                         f"signal_mask that selects the (positive) signal.")
    return mean / snr


def gaussian(values: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``image + n``, n ~ N(0, sigma²) per voxel."""
    return values + rng.normal(0.0, sigma, values.shape)


def rician(values: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``|image + n1 + i n2|``: the magnitude of complex Gaussian noise, as in magnitude MR images."""
    return np.hypot(values + rng.normal(0.0, sigma, values.shape), rng.normal(0.0, sigma, values.shape))


#: the noise models by name (``--train-noise`` / ``--eval-noise`` KIND): a new model is one entry here, a function of
#: the image (float64), the sigma that gives the requested SNR and a random generator
NOISE_MODELS: Dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gaussian": gaussian,
    "rician": rician,
}
NOISE_KINDS = tuple(NOISE_MODELS)


def add_noise(image: np.ndarray, kind: str, snr: float, rng: np.random.Generator,
              signal_mask: Optional[np.ndarray] = None) -> np.ndarray:
    """``image`` with the noise model ``kind`` at ``snr``, as float32."""
    _check_kind(kind)
    sigma = noise_sigma(image, snr, signal_mask)
    return NOISE_MODELS[kind](np.asarray(image, dtype=np.float64), sigma, rng).astype(np.float32)


def parse_condition(text: str) -> Tuple[str, float]:
    """``"rician:10"`` -> ``("rician", 10.0)``: how noise conditions are written on the command line."""
    kind, separator, snr_text = text.partition(":")
    try:
        snr = float(snr_text)
    except ValueError:
        snr = math.nan
    if not separator or kind not in NOISE_KINDS or not math.isfinite(snr) or snr <= 0:
        raise ValueError(f"Cannot read the noise condition {text!r}; write KIND:SNR with KIND one of {NOISE_KINDS} "
                         f"and SNR a number > 0, e.g. 'rician:10'.")
    return kind, snr


def condition_name(kind: Optional[str], snr: Optional[float] = None) -> str:
    """``("rician", 10)`` -> ``rician_snr10``, the name of an evaluation condition; no kind means ``clean``."""
    if kind is None:
        return CLEAN
    _check_kind(kind)
    _check_snr(snr)
    return f"{kind}_snr{naming.snr_text(snr)}"


def case_seed(base_seed: int, case_id: str, channel: int) -> int:
    """A seed per case and channel that is the same in every process (``hash()`` of a str is salted per run)."""
    return zlib.crc32(f"{base_seed}/{case_id}/{channel}".encode("utf-8"))


# ---------------------------------------------------------------------------------------------- files
def corrupt_image_file(src: Path, dst: Path, kind: str, snr: float, seed: int) -> None:
    """Write ``src`` with noise to ``dst`` with the same geometry; every channel of a multi-channel file separately.

    PNG and BMP hold integers only, so there the result is rounded and clipped to the source's dtype; everything
    else is written as float32 (rounding would distort the noise of low-intensity images).
    """
    source = sitk.ReadImage(str(src))
    pixels = sitk.GetArrayFromImage(source)
    rng = np.random.default_rng(seed)
    is_vector = source.GetNumberOfComponentsPerPixel() > 1
    try:
        if is_vector:
            noisy = np.stack([add_noise(pixels[..., c], kind, snr, rng) for c in range(pixels.shape[-1])], axis=-1)
        else:
            noisy = add_noise(pixels, kind, snr, rng)
    except ValueError as error:
        raise ValueError(f"{src}: {error}") from error
    if Path(dst).name.lower().endswith(INTEGER_ONLY_ENDINGS):
        info = np.iinfo(pixels.dtype)
        noisy = np.clip(np.rint(noisy), info.min, info.max).astype(pixels.dtype)
    result = sitk.GetImageFromArray(noisy, isVector=is_vector)
    result.CopyInformation(source)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(result, str(dst), useCompression=True)


def corrupt_cases(image_files: Mapping[str, Sequence[Path]], out_dir: Path, kind: str, snr: float,
                  seed: int) -> None:
    """Noisy copies of the input images of some cases (``case -> its channel files in channel order``) in
    ``out_dir``, under the source file names: e.g. corrupted validation cases to evaluate a trained model on."""
    _check_kind(kind)
    _check_snr(snr)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for case, files in image_files.items():
        for channel, src in enumerate(files):
            corrupt_image_file(Path(src), out_dir / Path(src).name, kind, snr, case_seed(seed, case, channel))


# ---------------------------------------------------------------------------------------------- datasets
def derive_noisy_dataset(source: Path, target_root: Path, dataset_id: int, kind: str, snr: float,
                         seed: int = 0) -> Path:
    """A standalone copy of a raw dataset with noisy images (imagesTr, imagesTs) and the same labels, to train on.

    Labels (labelsTr, labelsTs) are copied byte for byte, other folders are left out. Running it again with the
    same settings returns at once; an interrupted derivation is redone; other settings for the same target, or
    another dataset with the same id, raise ValueError.
    """
    _check_kind(kind)
    _check_snr(snr)
    source = Path(source)
    dataset_json = _read_dataset_json(source)
    target = Path(target_root) / naming.noisy_dataset_name(source.name, dataset_id, kind, snr)
    settings = {"kind": kind, "snr": float(snr), "seed": int(seed), "source": source.name}
    if _prepare_target(target, settings):
        return target
    target.mkdir(parents=True)
    _write_dataset_json(target, dataset_json, settings)
    ending = dataset_json["file_ending"]
    for folder in ("imagesTr", "imagesTs"):
        if (source / folder).is_dir():
            corrupt_cases(_cases(source / folder, ending), target / folder, kind, snr, seed)
    for folder in ("labelsTr", "labelsTs"):
        if (source / folder).is_dir():
            shutil.copytree(source / folder, target / folder)  # follows links: the copy stands alone
    (target / COMPLETE_MARKER).write_text(json.dumps(settings, indent=1))
    return target


def _read_dataset_json(source: Path) -> dict:
    path = source / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{source} has no dataset.json, so it is not an nnU-Net raw dataset; pass a "
                                f"folder like nnUNet_raw/Dataset004_Hippocampus.")
    dataset_json = json.loads(path.read_text())
    if "dataset" in dataset_json:
        raise ValueError(f"{path} lists its files under 'dataset'; only the imagesTr/labelsTr layout can be "
                         f"copied with noise. Move the files into that layout first.")
    return dataset_json


def _prepare_target(target: Path, settings: Dict[str, object]) -> bool:
    """True if ``target`` is already complete with ``settings``; removes an interrupted derivation of them."""
    same_id = naming.dataset_folders(target.parent, naming.dataset_id(target.name))
    others = [p.name for p in same_id if p.name != target.name]
    if others:
        raise ValueError(f"The dataset id of {target.name} is already used by {others} in {target.parent}; "
                         f"choose another id.")
    if not target.exists():
        return False
    marker = target / COMPLETE_MARKER
    if marker.is_file():
        recorded = json.loads(marker.read_text())
    elif (target / "dataset.json").is_file():  # written first, so it tells whose interrupted derivation this is
        recorded = json.loads((target / "dataset.json").read_text()).get("noise")
    else:
        recorded = settings if not any(target.iterdir()) else None
    if recorded != settings:
        raise ValueError(f"{target} already exists with other contents (noise settings {recorded}) than "
                         f"requested ({settings}); delete it or choose another dataset id.")
    if marker.is_file():
        return True
    shutil.rmtree(target)
    return False


def _write_dataset_json(target: Path, dataset_json: dict, settings: Dict[str, object]) -> None:
    derived = dict(dataset_json)
    noise = (f"Noisy copy of {settings['source']}: {settings['kind']} noise at SNR {settings['snr']:g} (mean "
             f"signal / sigma), seed {settings['seed']}, added to the images; labels unchanged.")
    derived["description"] = f"{noise} Source: {dataset_json['description']}" if "description" in dataset_json \
        else noise
    derived["noise"] = settings
    (target / "dataset.json").write_text(json.dumps(derived, indent=4))


def _cases(folder: Path, ending: str) -> Dict[str, List[Path]]:
    """``case -> channel files in channel order`` from nnU-Net's ``<case>_<XXXX><ending>`` names."""
    for path in sorted(folder.iterdir()):
        if path.name.endswith(ending) and naming.parse_image_file_name(path.name, ending) is None:
            raise ValueError(f"{path} does not follow nnU-Net's <case>_<XXXX>{ending} naming; rename it.")
    return {case: [channels[c] for c in sorted(channels)]
            for case, channels in naming.image_files_by_case(folder, ending).items()}
