"""The nnU-Net upgrade guard: the nnU-Net source that our code follows is still the source we followed."""
from __future__ import annotations

import nnunetv2
import pytest
from importlib.metadata import version

from nnunetv2_imnet.nnunet_followed import FOLLOWED, NNUNET_VERSION, Followed, changed, fingerprint, resolve


@pytest.mark.parametrize("entry", FOLLOWED, ids=lambda entry: entry.nnunet.rsplit(".", 2)[-2] + "." +
                         entry.nnunet.rsplit(".", 1)[-1])
def test_the_nnunet_code_we_follow_is_unchanged(entry: Followed) -> None:
    assert fingerprint(entry.nnunet) == entry.fingerprint, (
        f"nnU-Net {version('nnunetv2')} changed {entry.nnunet} (our code follows it as of nnU-Net {NNUNET_VERSION}). "
        f"Re-check {entry.ours}: {entry.recheck}. Then update its fingerprint in nnunetv2_imnet/nnunet_followed.py "
        f"(python -m nnunetv2_imnet.nnunet_followed prints the new ones).")


def test_a_changed_source_is_reported_with_what_to_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def train_step(self, batch):  # an "upgraded" nnU-Net whose train step differs
        return {"loss": 0.0}

    monkeypatch.setattr(nnUNetTrainer, "train_step", train_step)
    assert [entry.ours.split(":")[0] for entry in changed()] == ["training/imnet_trainer.py"]


def test_every_entry_resolves_to_nnunet_code() -> None:
    for entry in FOLLOWED:
        assert resolve(entry.nnunet).__module__.startswith("nnunetv2."), entry.nnunet
    assert nnunetv2.__name__ == "nnunetv2"
