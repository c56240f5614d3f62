"""The MI term's per-step cost in dispatched operators, and the hand-written gradients that keep it low.

Operator counts are profiler events (operators, autograd nodes), which do not depend on machine load: a change
that adds operators to the MI head fails here on a CPU before it costs wall time on a GPU, where nnU-Net's small
steps are bound by dispatch (issue 8). Before that work the head alone took 344 events and an IMNet step 396 more
than nnU-Net's (Hippocampus 3d_fullres).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from nnunetv2_imnet.mi.config import CRITICS, VIEWS, MIConfig
from nnunetv2_imnet.mi.critics import BilinearCritic, _BilinearScores
from nnunetv2_imnet.mi.estimators import ESTIMATORS, ESTIMATORS_WITH_GRADIENT
from nnunetv2_imnet.mi.head import build_mi_head
from trainer_helpers import make_trainer, nnunet_folders, synthetic_batches, tiny_plans

pytestmark = pytest.mark.usefixtures("single_thread")

#: profiler events of the default MI head's forward + backward (measured: 3D 142, 2D 129 with torch 2.14)
MAX_HEAD_EVENTS = {3: 150, 2: 136}
#: events an IMNet train step adds to nnU-Net's on tiny plans: the head, its two parameters in the optimizer
#: and gradient clipping (per parameter on CPU), the MI loss's addition and the logged values (measured: 189)
MAX_STEP_EXTRA_EVENTS = 200


def cpu_events(run: Callable[[], object]) -> int:
    """Profiler events of one call of ``run`` after a first, unprofiled one (which fills the index caches)."""
    run()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run()
    return sum(e.device_type == DeviceType.CPU and getattr(e, "activity_type", None) != "overhead"
               for e in profiler.events())


@pytest.mark.parametrize("ndim", [3, 2])
def test_mi_head_operator_count_stays_below_its_bound(ndim):
    grid = (5, 7, 5)[:ndim]
    head = build_mi_head(MIConfig(), feature_channels=32, image_channels=1, stride=(8,) * ndim)
    features = torch.randn(2, 32, *grid, requires_grad=True)
    image = torch.randn(2, 1, *[8 * g for g in grid])
    events = cpu_events(lambda: head(features, image).loss.backward())
    assert 50 < events <= MAX_HEAD_EVENTS[ndim], f"{events} profiler events for the MI head's forward + backward"


def test_imnet_step_adds_few_operators_to_nnunets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in nnunet_folders(tmp_path).items():
        monkeypatch.setenv(name, value)
    plans, dataset_json, configuration = tiny_plans()
    steps = {}
    for name in ("nnUNetTrainer_smoke", "nnUNetTrainerIMNet_smoke"):
        trainer = make_trainer(name, plans, dataset_json, configuration)
        trainer.on_train_epoch_start()
        batch = synthetic_batches(trainer, 1)[0]
        steps[name] = cpu_events(lambda: trainer.train_step(batch))
    extra = steps["nnUNetTrainerIMNet_smoke"] - steps["nnUNetTrainer_smoke"]
    assert 0 < extra <= MAX_STEP_EXTRA_EVENTS, f"IMNet adds {extra} events to nnU-Net's {steps}"


# ------------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_estimator_gradients_match_autograd(estimator, scale):
    assert ESTIMATORS_WITH_GRADIENT.keys() == ESTIMATORS.keys()
    scores = (scale * torch.randn(24, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    scores.requires_grad_(True)
    loss, mi = ESTIMATORS[estimator](scores)
    (expected,) = torch.autograd.grad(loss, scores)
    fused_loss, fused_mi, grad = ESTIMATORS_WITH_GRADIENT[estimator](scores.detach())
    torch.testing.assert_close(fused_loss, loss.detach())
    torch.testing.assert_close(fused_mi, mi)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("view_channels", [1, 3])
def test_bilinear_scores_gradients_pass_gradcheck(view_channels):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 6, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    views = torch.randn(2, 6, view_channels, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(4, view_channels, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn((), dtype=torch.float64, generator=generator, requires_grad=True)
    candidates = torch.randint(0, 12, (2, 6, 5), generator=generator)
    assert torch.autograd.gradcheck(_BilinearScores.apply, (features, views, weight, bias, candidates))


@pytest.mark.parametrize("view, critic, estimator, embedding", list(itertools.product(
    VIEWS, CRITICS, sorted(ESTIMATORS), (0, 4))))
def test_mi_head_matches_plain_autograd_of_its_formula(view, critic, estimator, embedding):
    """The one-node estimator and critic give the loss and gradients of the textbook expression."""
    torch.manual_seed(0)
    config = MIConfig(view=view, critic=critic, estimator=estimator, embedding_channels=embedding,
                      critic_hidden_channels=5, batch_negatives=2, location_negatives=3, temperature=1.5)
    head = build_mi_head(config, 6, 1, (2, 2))
    head.set_gradient_weight(0.3)
    features = torch.randn(2, 6, 3, 2, requires_grad=True)
    image = torch.randn(2, 1, 6, 4)
    torch.manual_seed(5)
    output = head(features, image)
    output.loss.backward()
    grads = [features.grad.clone()] + [p.grad.clone() for p in head.parameters()]

    features.grad = None
    head.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same negatives
    anchors = features.flatten(2).transpose(1, 2)
    views = head.view(image, (3, 2)).flatten(2).transpose(1, 2)
    candidates = head.sampler(2, 6, features.device)
    if critic == "bilinear":
        gathered = views.reshape(-1, views.shape[-1])[candidates]
        scores = torch.einsum("bnc,cv,bnkv->bnk", anchors, head.critic.weight, gathered) + head.critic.bias
    else:
        scores = head.critic(anchors, views, candidates)
    loss, estimate = ESTIMATORS[estimator](scores / 1.5)
    weighted = torch.autograd.grad(loss, features, retain_graph=True)[0] * 0.3
    loss.backward(inputs=list(head.parameters()))
    torch.testing.assert_close(output.loss, loss.detach())
    torch.testing.assert_close(output.estimate, estimate)
    torch.testing.assert_close(grads[0], weighted)
    for grad, parameter in zip(grads[1:], head.parameters()):
        torch.testing.assert_close(grad, parameter.grad)


def test_gradient_weight_buffer_is_written_only_when_lambda_changes():
    head = build_mi_head(MIConfig(), 6, 1, (2, 2))
    writes = []
    original_fill = head.gradient_weight.fill_
    head.gradient_weight.fill_ = lambda value: writes.append(value) or original_fill(value)
    for weight in (0.0, 0.1, 0.1, 0.1, 0.2, 0.2):
        head.set_gradient_weight(weight)
    assert writes == [0.0, 0.1, 0.2]
    assert head.gradient_weight.item() == pytest.approx(0.2)


def test_bilinear_critic_guards_its_own_gradients_and_head_hooks_the_rest():
    head = build_mi_head(MIConfig(embedding_channels=4), 6, 1, (2, 2))
    assert BilinearCritic.guards_own_gradients
    hooked = {name for name, p in head.named_parameters() if p._backward_hooks}
    assert hooked == {name for name, _ in head.named_parameters() if not name.startswith("critic.")}
