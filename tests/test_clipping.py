"""Per-group gradient clipping: known values, and each group exactly as ``clip_grad_norm_`` clips it alone."""
from __future__ import annotations

import pytest
import torch

from nnunetv2_imnet.training.clipping import clip_grad_norms_


def _parameters(*gradients):
    parameters = []
    for gradient in gradients:
        parameter = torch.nn.Parameter(torch.zeros(len(gradient)))
        parameter.grad = torch.tensor(gradient, dtype=torch.float32)
        parameters.append(parameter)
    return parameters


def test_known_values_each_group_against_its_own_norm() -> None:
    small, large = _parameters([3.0, 4.0]), _parameters([30.0, 0.0], [0.0, 40.0])
    totals = clip_grad_norms_([small, large], max_norm=12)
    torch.testing.assert_close(totals, torch.tensor([5.0, 50.0]))
    assert torch.equal(small[0].grad, torch.tensor([3.0, 4.0])), "a group under the limit stays as it is"
    torch.testing.assert_close(torch.cat([p.grad for p in large]), torch.tensor([7.2, 0.0, 0.0, 9.6]))


@pytest.mark.parametrize("scale", [0.01, 1.0, 1e6])
def test_each_group_ends_bit_for_bit_as_clip_grad_norm_leaves_it(scale) -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (7,), (2, 2, 2)]
    grads = [scale * torch.randn(s, generator=generator) for s in shapes] + [torch.randn(5, generator=generator)]
    ours = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for parameter, other, grad in zip(ours, theirs, grads):
        parameter.grad, other.grad = grad.clone(), grad.clone()
    totals = clip_grad_norms_([ours[:3], ours[3:]], max_norm=12)
    expected = [torch.nn.utils.clip_grad_norm_(theirs[:3], 12), torch.nn.utils.clip_grad_norm_(theirs[3:], 12)]
    assert torch.equal(totals, torch.stack(expected))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs))


def test_parameters_and_groups_without_gradients_are_left_out() -> None:
    without = torch.nn.Parameter(torch.ones(2))
    totals = clip_grad_norms_([[without, *_parameters([0.0, 24.0])], [without]], max_norm=12)
    torch.testing.assert_close(totals, torch.tensor([24.0]))
    assert without.grad is None
