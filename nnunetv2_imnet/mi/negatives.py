"""Negative pairs for the MI critic, sampled on the device without a host round trip.

For the anchor feature at image ``i``, location ``s`` the sampler picks

- batch negatives: the view of another image ``j != i`` at the same location ``s`` (DGI-style shuffling; the
  same anatomy position makes them hard negatives, so the feature must encode *this* image), and
- location negatives: the view of the same image ``i`` at another location ``t != s`` (Deep InfoMax's local
  negatives), which exist even for batch size 1, the norm for large 3D patches.

Indices are flat positions in the ``B*N`` location-major view vectors. Sampling is with replacement.
"""
from __future__ import annotations

from typing import Optional

import torch


class NegativeSampler:
    """Builds ``(B, N, 1 + K)`` candidate indices: column 0 is the positive, the rest are negatives."""

    def __init__(self, batch_negatives: int = 8, location_negatives: int = 8) -> None:
        if batch_negatives < 0 or location_negatives < 0:
            raise ValueError(f"Negative counts must be >= 0, got batch_negatives={batch_negatives}, "
                             f"location_negatives={location_negatives}.")
        if batch_negatives + location_negatives == 0:
            raise ValueError("batch_negatives and location_negatives are both 0: the MI estimate needs negatives.")
        self.batch_negatives = batch_negatives
        self.location_negatives = location_negatives

    def num_negatives(self, batch_size: int, num_locations: int) -> int:
        """How many negatives each anchor gets: batch negatives need B > 1, location negatives N > 1."""
        from_batch = self.batch_negatives if batch_size > 1 else 0
        from_locations = self.location_negatives if num_locations > 1 else 0
        return from_batch + from_locations

    def __call__(self, batch_size: int, num_locations: int, device: torch.device,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if self.num_negatives(batch_size, num_locations) == 0:
            raise ValueError(f"No negative pairs are possible with batch size {batch_size} and {num_locations} "
                             f"bottleneck location(s). Use a batch size > 1 or a patch size that leaves more than one "
                             f"bottleneck location.")
        images = torch.arange(batch_size, device=device).view(-1, 1, 1)
        locations = torch.arange(num_locations, device=device).view(1, -1, 1)
        columns = [images * num_locations + locations]
        if batch_size > 1 and self.batch_negatives:
            shift = torch.randint(1, batch_size, (batch_size, num_locations, self.batch_negatives),
                                  device=device, generator=generator)
            columns.append(((images + shift) % batch_size) * num_locations + locations)
        if num_locations > 1 and self.location_negatives:
            shift = torch.randint(1, num_locations, (batch_size, num_locations, self.location_negatives),
                                  device=device, generator=generator)
            columns.append(images * num_locations + (locations + shift) % num_locations)
        return torch.cat(columns, dim=-1)
