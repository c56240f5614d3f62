"""Negative pairs for the MI critic, sampled on the device without a host round trip.

For the anchor feature at image ``i``, location ``s`` the sampler picks

- batch negatives: the view of another image ``j != i`` at the same location ``s`` (DGI-style shuffling; the
  same anatomy position makes them hard negatives, so the feature must encode *this* image), and
- location negatives: the view of the same image ``i`` at another location ``t != s`` (Deep InfoMax's local
  negatives), which exist even for batch size 1, the norm for large 3D patches.

Indices are flat positions in the ``B*N`` location-major view vectors. Sampling is with replacement.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

_GridKey = Tuple[int, int, torch.device]
_Grids = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class NegativeSampler:
    """Builds ``(B, N, 1 + K)`` candidate indices: column 0 is the positive, the rest are negatives.

    The index grids that do not depend on the draw are kept per batch size, location count and device: the
    sampler runs every training step, and rebuilding them cost more operator calls than the draw itself.
    """

    def __init__(self, batch_negatives: int = 8, location_negatives: int = 8) -> None:
        if batch_negatives < 0 or location_negatives < 0:
            raise ValueError(f"Negative counts must be >= 0, got batch_negatives={batch_negatives}, "
                             f"location_negatives={location_negatives}.")
        if batch_negatives + location_negatives == 0:
            raise ValueError("batch_negatives and location_negatives are both 0: the MI estimate needs negatives.")
        self.batch_negatives = batch_negatives
        self.location_negatives = location_negatives
        self._grids: Dict[_GridKey, _Grids] = {}

    def num_negatives(self, batch_size: int, num_locations: int) -> int:
        """How many negatives each anchor gets: batch negatives need B > 1, location negatives N > 1."""
        from_batch = self.batch_negatives if batch_size > 1 else 0
        from_locations = self.location_negatives if num_locations > 1 else 0
        return from_batch + from_locations

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_grids": {}}  # copies and checkpoints carry no cached index tensors

    def _index_grids(self, batch_size: int, num_locations: int, device: torch.device) -> _Grids:
        """``(images, locations, images * N, images * N + locations)``, each broadcastable to ``(B, N, 1)``."""
        key = (batch_size, num_locations, torch.device(device))
        grids = None if torch.compiler.is_compiling() else self._grids.get(key)
        if grids is None:
            images = torch.arange(batch_size, device=device).view(-1, 1, 1)
            locations = torch.arange(num_locations, device=device).view(1, -1, 1)
            offsets = images * num_locations
            grids = (images, locations, offsets, offsets + locations)
            if not torch.compiler.is_compiling():
                self._grids[key] = grids
        return grids

    def __call__(self, batch_size: int, num_locations: int, device: torch.device,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.num_negatives(batch_size, num_locations) == 0:
            raise ValueError(f"No negative pairs are possible with batch size {batch_size} and {num_locations} "
                             f"bottleneck location(s). Use a batch size > 1 or a patch size that leaves more than one "
                             f"bottleneck location.")
        images, locations, offsets, positives = self._index_grids(batch_size, num_locations, device)
        columns = [positives]  # (B, N, 1) already
        if batch_size > 1 and self.batch_negatives:
            shift = torch.randint(1, batch_size, (batch_size, num_locations, self.batch_negatives),
                                  device=device, generator=generator)
            columns.append(shift.add_(images).remainder_(batch_size).mul_(num_locations).add_(locations))
        if num_locations > 1 and self.location_negatives:
            shift = torch.randint(1, num_locations, (batch_size, num_locations, self.location_negatives),
                                  device=device, generator=generator)
            columns.append(shift.add_(locations).remainder_(num_locations).add_(offsets))
        return torch.cat(columns, dim=-1)
