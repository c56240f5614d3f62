"""The runner's stages of a label-budget benchmark: each budget's derived dataset and unlabelled images (during
preparation), and a self-training student's pseudo-labels and pseudo-labelled dataset (before it trains).

``LabelBudgetStages`` is a part of ``runner.BenchmarkRunner``: it uses the runner's spec, dry-run flag, output, raw
folders and its way of running, showing and timing a command.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from nnunetv2_imnet.benchmark import commands
from nnunetv2_imnet.benchmark import label_budgets as budgets
from nnunetv2_imnet.benchmark import self_training
from nnunetv2_imnet.benchmark.archive import archive_pseudo_labels, restore_pseudo_labels
from nnunetv2_imnet.benchmark.spec import Job, LabelBudget, uses_unlabelled_images
from nnunetv2_imnet.naming import training_done


class LabelBudgetStages:
    """The label-budget and self-training stages of ``BenchmarkRunner`` (a mixin: the runner's state, its commands)."""

    def prepare_label_budgets(self, jobs: Sequence[Job]) -> None:
        """Each label budget's preprocessed folder, and its unlabelled images where an arm uses them (after the
        sources are preprocessed)."""
        unlabelled: Dict[Tuple[LabelBudget, str, str], bool] = {}
        for job in jobs:
            if job.label_budget is not None:
                key = (job.label_budget, job.task.configuration, job.method.plans)
                unlabelled[key] = unlabelled.get(key, False) or uses_unlabelled_images(job.method.trainer)
        for (budget, configuration, plans), with_unlabelled in unlabelled.items():
            self._prepare_label_budget(budget, configuration, plans)
            if with_unlabelled:
                self._prepare_unlabelled(budget, configuration, plans)

    def link_label_budget(self, budget: LabelBudget) -> None:
        """A label budget's raw folder (links to its source's files), once its sizes are checked against the
        source's split."""
        source = self.raw_folders[budget.source]
        splits = budgets.source_splits(source, self.spec.nnunet_preprocessed() / budget.source, write=False)
        budgets.check_budgets(splits, [budget.labeled_cases], budget.source)
        target = self.spec.nnunet_raw() / budget.dataset
        self.raw_folders[budget.dataset] = source if self.dry_run else target
        if self.dry_run:
            print(f"# derive {budget.dataset}: {budget.labeled_cases} labelled case(s) a fold of {budget.source} "
                  f"(seed {self.spec.label_seed}), linked to its files and preprocessed data", file=self.out)
        else:
            budgets.link_raw_dataset(source, target)

    def _prepare_label_budget(self, budget: LabelBudget, configuration: str, plans: str) -> None:
        """The budget's preprocessed folder: the source's plans and preprocessed data, its own split."""
        source, target = (self.spec.nnunet_preprocessed() / name for name in (budget.source, budget.dataset))
        marker = self.spec.prepared_marker(budget.dataset, plans, configuration)
        if marker.is_file() or self.dry_run:
            return
        splits = budgets.source_splits(self.raw_folders[budget.source], source, write=True)
        budgets.link_preprocessed(source, target, plans, configuration,
                                  budgets.budget_splits(splits, budget.labeled_cases, self.spec.label_seed))
        marker.write_text(json.dumps({"labeled_cases": budget.labeled_cases, "label_seed": self.spec.label_seed}))

    def _prepare_unlabelled(self, budget: LabelBudget, configuration: str, plans: str) -> None:
        """Every training case's image of the source, preprocessed as unlabelled images of the budget's dataset
        (each fold's split entry says which of them a training uses)."""
        from nnunetv2_imnet.unlabelled import prepare_unlabelled  # the trainers' module: torch and nnU-Net
        target = self.spec.nnunet_preprocessed() / budget.dataset
        marker = target / f".unlabelled_{plans}_{configuration}"
        images = self.spec.unlabelled_images_dir(budget.source)
        stage = f"prepare unlabelled images of {budget.dataset} {plans} {configuration}"
        if self.dry_run:
            print(f"# {'[done] ' * marker.is_file()}{stage}: the images of every training case of {budget.source} "
                  f"(links in {images}) preprocessed by nnunetv2_imnet.unlabelled.prepare_unlabelled", file=self.out)
            return
        if marker.is_file():
            return
        source = self.raw_folders[budget.source]
        budgets.link_case_images(source, budgets.case_identifiers(source), images)
        with self._timed(stage):
            folder = prepare_unlabelled(images, target, plans, configuration, commands.PROCESSES)
        marker.write_text(str(folder))

    # ------------------------------------------------------------------ self-training
    def prepare_student(self, job: Job, archive: Optional[Path]) -> bool:
        """The teacher's pseudo-labels (kept in the archive at once, so a fresh machine continues without the
        teacher's model), then the student's dataset, preprocessed. True if something ran."""
        if archive is not None:
            restore_pseudo_labels(self.spec, job, archive)
        ran = self.predict_pseudo_labels(job)
        if archive is not None and not self.dry_run:
            archive_pseudo_labels(self.spec, job, archive)
        raw, preprocessed = (root / job.model_dataset for root in (self.spec.nnunet_raw(),
                                                                    self.spec.nnunet_preprocessed()))
        budget = job.label_budget
        if self.dry_run:
            print(f"# build {job.model_dataset}: the {budget.labeled_cases} labelled and the validation cases of "
                  f"{budget.dataset} fold {job.fold} with their labels, its unlabelled cases with the teacher's "
                  f"pseudo-labels", file=self.out)
        elif not (raw / self_training.BUILT_MARKER).is_file():
            self_training.build_student_dataset(
                self.raw_folders[budget.dataset], self.spec.nnunet_preprocessed() / budget.dataset,
                self.spec.pseudo_label_dir(job) / "predictions", raw, preprocessed, job.method.plans, job.fold)
        marker = self.spec.prepared_marker(job.model_dataset, job.method.plans, job.task.configuration)
        command = commands.preprocess(job.model_dataset, job.task.configuration, job.method.plans)
        if marker.is_file():
            self._show(command, done=True)
            return ran
        self._execute(command, training=False, log=self._log_file(f"preprocess_{job.model_dataset}"),
                      stage=f"preprocess the pseudo-labelled data {job.label}")
        if not self.dry_run:
            marker.write_text(commands.render(command))
        return True

    def predict_pseudo_labels(self, job: Job) -> bool:
        """The teacher's prediction (nnU-Net's defaults, TTA on) of the fold's unlabelled cases."""
        teacher, folder = self.spec.teacher(job), self.spec.pseudo_label_dir(job)
        command = commands.predict(teacher, folder / "inputs", folder / "predictions", self.spec.device, tta=True)
        if (folder / self_training.PREDICTED_MARKER).is_file():
            self._show(command, done=True)
            return False
        if self.dry_run:
            self._show(command)
            return True
        model = self.spec.fold_dir(teacher)
        if not (model / "checkpoint_final.pth").is_file():
            if training_done(model):
                raise FileNotFoundError(
                    f"{job.label} needs its teacher's pseudo-labels, and neither they nor the teacher's model exist: "
                    f"{teacher.label} was restored from an archive, which keeps no model. Retrain the teacher (its "
                    f"run is set aside, archive included), then run this job again: {self._retrain_command(teacher)}")
            raise FileNotFoundError(
                f"The teacher of {job.label}, {teacher.label}, has not finished training ({model} has no "
                f"checkpoint_final.pth). Train it first (the benchmark runs teachers before students; in SLURM, "
                f"submit.sh makes the student wait for its teacher's task), then run this job again.")
        unlabelled = json.loads(self.spec.splits_file(job.task.dataset).read_text())[job.fold]["unlabelled"]
        budgets.link_case_images(self.raw_folders[job.task.dataset], unlabelled, folder / "inputs")
        if (folder / "predictions").exists():
            shutil.rmtree(folder / "predictions")  # an interrupted prediction: start it again
        self._execute(command, training=False, log=self._log_file(f"pseudo_labels_{slug(job.label)}"),
                      stage=f"{self_training.PSEUDO_LABEL_STAGE} {job.label}")
        (folder / self_training.PREDICTED_MARKER).write_text(json.dumps({"teacher": teacher.label,
                                                                          "cases": len(unlabelled)}))
        return True


def slug(text: str) -> str:
    """``text`` as a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
