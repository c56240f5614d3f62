"""Negative pairs for the MI critic, sampled on the device without a host round trip.

For the anchor feature at image ``i``, location ``s`` the sampler picks

- batch negatives: the view of another image ``j != i`` at the same location ``s`` (DGI-style shuffling; the
  same anatomy position makes them hard negatives, so the feature must encode *this* image), and
- location negatives: the view of the same image ``i`` at another location ``t != s`` (Deep InfoMax's local
  negatives), which exist even for batch size 1, the norm for large 3D patches.

Indices are flat positions in the ``B*N`` location-major view vectors. Sampling is with replacement.
"""
from __future__ import annotations

import math
from typing import Dict, NamedTuple, Optional, Tuple

import torch


class _Tables(NamedTuple):
    """Per column ``c`` of the candidates, broadcastable to ``(B, N, 1 + K)``: a candidate is
    ``base + ((start + r % modulus) % period) * stride`` for a uniform random integer ``r``.

    Column 0 (the positive) has modulus 1, so it is the anchor's own view; a batch negative moves ``1 + r % (B-1)``
    images on (cyclically), a location negative ``1 + r % (N-1)`` locations, so it never lands on the anchor.
    """

    high: int  # a multiple of every modulus, so ``r % modulus`` is exactly uniform
    modulus: torch.Tensor
    start: torch.Tensor
    period: torch.Tensor
    stride: torch.Tensor
    base: torch.Tensor


class NegativeSampler:
    """Builds ``(B, N, 1 + K)`` candidate indices: column 0 is the positive, the rest are negatives.

    One random draw per step turns into every column through per-column tables, which are kept per batch size,
    location count and device: the sampler runs every training step, where each operator call costs more than
    its arithmetic (issue 8).
    """

    def __init__(self, batch_negatives: int = 8, location_negatives: int = 8) -> None:
        if batch_negatives < 0 or location_negatives < 0:
            raise ValueError(f"Negative counts must be >= 0, got batch_negatives={batch_negatives}, "
                             f"location_negatives={location_negatives}.")
        if batch_negatives + location_negatives == 0:
            raise ValueError("batch_negatives and location_negatives are both 0: the MI estimate needs negatives.")
        self.batch_negatives = batch_negatives
        self.location_negatives = location_negatives
        self._tables: Dict[Tuple[int, int, torch.device], _Tables] = {}

    def num_negatives(self, batch_size: int, num_locations: int) -> int:
        """How many negatives each anchor gets: batch negatives need B > 1, location negatives N > 1."""
        return len(self._kinds(batch_size, num_locations)) - 1

    def _kinds(self, batch_size: int, num_locations: int) -> list:
        """One entry per candidate column: "positive", then "batch" and "location" negatives."""
        from_batch = self.batch_negatives if batch_size > 1 else 0
        from_locations = self.location_negatives if num_locations > 1 else 0
        return ["positive"] + ["batch"] * from_batch + ["location"] * from_locations

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tables": {}}  # copies and checkpoints carry no cached index tensors

    def _build_tables(self, batch_size: int, num_locations: int, device: torch.device) -> _Tables:
        kinds = self._kinds(batch_size, num_locations)
        images = torch.arange(batch_size, device=device).view(-1, 1, 1)
        locations = torch.arange(num_locations, device=device).view(1, -1, 1)
        is_batch = torch.tensor([kind == "batch" for kind in kinds], device=device)
        is_location = torch.tensor([kind == "location" for kind in kinds], device=device)
        moduli = {"positive": 1, "batch": batch_size - 1, "location": num_locations - 1}
        modulus = torch.tensor([moduli[kind] for kind in kinds], device=device)
        period = torch.where(is_batch, batch_size, num_locations)
        stride = torch.where(is_batch, num_locations, 1)
        start = torch.where(is_batch, images + 1, torch.where(is_location, locations + 1, locations))
        base = torch.where(is_batch, locations, images * num_locations)
        common = math.lcm(*(moduli[kind] for kind in set(kinds)))
        return _Tables(common * max(1, 2 ** 40 // common), modulus.view(1, 1, -1), start, period.view(1, 1, -1),
                       stride.view(1, 1, -1), base)

    def _tables_for(self, batch_size: int, num_locations: int, device: torch.device) -> _Tables:
        if torch.compiler.is_compiling():  # built inside the graph, where they are folded into the kernels
            return self._build_tables(batch_size, num_locations, device)
        key = (batch_size, num_locations, torch.device(device))
        if key not in self._tables:
            self._tables[key] = self._build_tables(batch_size, num_locations, device)
        return self._tables[key]

    def __call__(self, batch_size: int, num_locations: int, device: torch.device,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.num_negatives(batch_size, num_locations) == 0:
            raise ValueError(f"No negative pairs are possible with batch size {batch_size} and {num_locations} "
                             f"bottleneck location(s). Use a batch size > 1 or a patch size that leaves more than one "
                             f"bottleneck location.")
        tables = self._tables_for(batch_size, num_locations, device)
        draw = torch.randint(tables.high, (batch_size, num_locations, tables.modulus.shape[-1]), device=device,
                             generator=generator)
        return draw.remainder_(tables.modulus).add_(tables.start).remainder_(tables.period).mul_(
            tables.stride).add_(tables.base)
