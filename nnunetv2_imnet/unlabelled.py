"""Unlabelled images for the MI term, preprocessed with a dataset's own plans as nnU-Net preprocesses images for
inference (no segmentation is read, none exists).

Layout, beside nnU-Net's own preprocessed data: ``nnUNet_preprocessed/<Dataset>/imnet_unlabelled/<data identifier>/``
holds one case per image in nnU-Net's blosc2 format (``<case>.b2nd``, ``<case>_seg.b2nd``, ``<case>.pkl``) and the
manifest ``unlabelled.json``. The ``_seg`` array is not a label: it is the nonzero mask that nnU-Net's preprocessing
derives from the image itself (-1 outside the image's nonzero region, 0 inside), which nnU-Net's augmentation uses
where the plans normalise within that mask.

A fold entry of ``splits_final.json`` may list the cases a training uses under ``"unlabelled"`` (nnU-Net ignores
keys it does not know); without it a training uses every prepared case.
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_imnet.naming import image_files_by_case

FOLDER = "imnet_unlabelled"
MANIFEST = "unlabelled.json"
#: the key of a splits_final.json fold entry that lists the unlabelled cases of that fold
SPLIT_KEY = "unlabelled"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    """What a folder of prepared unlabelled cases was made for; a trainer refuses a folder made for other plans."""

    plans_identifier: str
    configuration: str
    data_identifier: str
    spacing: List[float]
    num_channels: int
    cases: List[str]
    source: str
    format: int = MANIFEST_FORMAT

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"No prepared unlabelled images in {folder} (no {MANIFEST}). Prepare them with: "
                                    f"nnunetv2-imnet prepare-unlabelled -d DATASET -c CONFIGURATION -i IMAGES_FOLDER")
        return cls(**json.loads(path.read_text()))

    def write(self, folder: Path) -> None:
        (Path(folder) / MANIFEST).write_text(json.dumps(asdict(self), indent=1))


def unlabelled_folder(preprocessed_dataset: Path, data_identifier: str) -> Path:
    """Where the unlabelled cases of one configuration live, e.g. ``.../imnet_unlabelled/nnUNetPlans_3d_fullres``."""
    return Path(preprocessed_dataset) / FOLDER / data_identifier


def find_image_cases(images: Path, file_ending: str, num_channels: int) -> Dict[str, List[Path]]:
    """Case id -> its channel files ``<case>_0000<ending>`` ... in channel order, by nnU-Net's file naming.

    Raises ``FileNotFoundError`` for a missing or empty folder and ``ValueError`` naming the cases whose channel files
    do not match the dataset's ``num_channels``.
    """
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"The unlabelled images folder {images} does not exist.")
    channels = image_files_by_case(images, file_ending)
    if not channels:
        raise FileNotFoundError(
            f"No images named <case>_0000{file_ending} in {images}. Name unlabelled images as nnU-Net names its "
            f"images (one file per channel: CASE_0000{file_ending}, CASE_0001{file_ending}, ...) with the dataset's "
            f"file ending {file_ending!r}.")
    expected = list(range(num_channels))
    wrong = {case: sorted(found) for case, found in channels.items() if sorted(found) != expected}
    if wrong:
        shown = ", ".join(f"{case}: channels {found}" for case, found in list(wrong.items())[:5])
        raise ValueError(
            f"{len(wrong)} case(s) in {images} do not have the dataset's {num_channels} channel(s) "
            f"{['%04d' % c for c in expected]} ({shown}{', ...' if len(wrong) > 5 else ''}). Give every case one file "
            f"per channel of the dataset's channel_names, in the same order as its labelled images.")
    return {case: [found[c] for c in expected] for case, found in channels.items()}


def prepare_unlabelled(images: Path, preprocessed_dataset: Path, plans_identifier: str, configuration: str,
                       num_processes: int = 2, cases: Optional[Sequence[str]] = None) -> Path:
    """Preprocess the images of ``images`` (nnU-Net file naming, any number of channels) with the plans of
    ``preprocessed_dataset`` (a dataset folder in nnUNet_preprocessed) for ``configuration``; returns the folder.

    Cases already prepared are kept, so running it again after an interruption, or with more images, only does what
    is missing. ``cases`` restricts it to those case ids.
    """
    preprocessed_dataset = Path(preprocessed_dataset)
    plans_file = preprocessed_dataset / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(
            f"No plans {plans_file}. Plan the labelled dataset first (nnUNetv2_plan_and_preprocess -d ID -c "
            f"{configuration}); unlabelled images are preprocessed with its plans.")
    dataset_json = json.loads((preprocessed_dataset / "dataset.json").read_text())
    plans_manager = PlansManager(str(plans_file))
    if configuration not in plans_manager.available_configurations:
        raise ValueError(f"Configuration {configuration!r} is not in {plans_file.name}; it has "
                         f"{plans_manager.available_configurations}.")
    configuration_manager = plans_manager.get_configuration(configuration)
    if configuration_manager.previous_stage_name is not None:
        raise ValueError(f"{configuration!r} is a cascade stage: its input includes the previous stage's "
                         f"segmentation, which unlabelled images do not have. Use a configuration without a previous "
                         f"stage (e.g. 3d_fullres or 2d).")
    num_channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    found = find_image_cases(images, dataset_json["file_ending"], num_channels)
    if cases is not None:
        missing = sorted(set(cases) - set(found))
        if missing:
            raise FileNotFoundError(f"No images for case(s) {missing[:5]} in {images}.")
        found = {case: found[case] for case in cases}
    folder = unlabelled_folder(preprocessed_dataset, configuration_manager.data_identifier)
    folder.mkdir(parents=True, exist_ok=True)
    todo = {case: files for case, files in found.items() if not _prepared(folder, case)}
    arguments = [(str(folder / case), [str(f) for f in files], str(plans_file), configuration, dataset_json)
                 for case, files in todo.items()]
    if num_processes <= 1 or len(arguments) <= 1:
        for argument in arguments:
            _preprocess_case(*argument)
    else:
        with ProcessPoolExecutor(num_processes, mp_context=get_context("spawn")) as pool:
            list(pool.map(_preprocess_case, *zip(*arguments)))
    prepared = sorted(path.stem for path in folder.glob("*.pkl")
                      if not path.name.startswith(".") and _prepared(folder, path.stem))
    Manifest(plans_identifier, configuration, configuration_manager.data_identifier,
             [float(s) for s in configuration_manager.spacing], num_channels, prepared,
             str(Path(images).resolve())).write(folder)
    return folder


def _prepared(folder: Path, case: str) -> bool:
    return all((folder / f"{case}{suffix}").is_file() for suffix in (".b2nd", "_seg.b2nd", ".pkl"))


def _preprocess_case(output_truncated: str, image_files: List[str], plans_file: str, configuration: str,
                     dataset_json: dict) -> None:
    """nnU-Net's own preprocessing of one case without a segmentation (as for inference), saved as for training.

    The files are written under temporary names and renamed last, so a killed run never leaves a half case that
    counts as prepared."""
    plans_manager = PlansManager(plans_file)
    configuration_manager = plans_manager.get_configuration(configuration)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    output = Path(output_truncated)
    temporary = output.with_name(f".partial_{output.name}")
    preprocessor.run_case_save(str(temporary), image_files, None, plans_manager, configuration_manager, dataset_json)
    for suffix in ("_seg.b2nd", ".b2nd", ".pkl"):  # the .pkl last: it marks the case as prepared
        Path(f"{temporary}{suffix}").replace(f"{output}{suffix}")
