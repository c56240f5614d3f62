"""Gradient clipping per parameter group, each group exactly as ``torch.nn.utils.clip_grad_norm_`` clips it.

IMNet clips the segmentation network as nnU-Net does and the MI head on its own. Two ``clip_grad_norm_`` calls would
dispatch every step of the clipping twice; here the per-tensor norms come from one ``_foreach_norm`` over all
gradients and only the group totals, coefficients and scalings are per group (what costs dispatches on a GPU,
where nnU-Net's small steps are bound by them). The arithmetic is ``clip_grad_norm_``'s, so a group's gradients
end bit for bit as that function leaves them.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence

import torch


def clip_grad_norms_(groups: Sequence[Iterable[torch.nn.Parameter]], max_norm: float) -> torch.Tensor:
    """Scale each group's gradients so that the group's total 2-norm is at most ``max_norm``; returns the total
    norms before clipping of the groups that have gradients. Parameters without a gradient are left out, as
    ``clip_grad_norm_`` leaves them, and so is a group without any."""
    gradients: List[List[torch.Tensor]] = [[p.grad for p in group if p.grad is not None] for group in groups]
    gradients = [group for group in gradients if group]
    if not gradients:
        return torch.zeros(0)
    norms = torch._foreach_norm([g for group in gradients for g in group], 2.0)
    totals, start = [], 0
    for group in gradients:
        totals.append(torch.linalg.vector_norm(torch.stack(norms[start:start + len(group)]), 2.0))
        start += len(group)
    total_norms = torch.stack(totals)
    coefficients = torch.clamp(max_norm / (total_norms + 1e-6), max=1.0)
    for index, group in enumerate(gradients):
        torch._foreach_mul_(group, coefficients[index])
    return total_norms
