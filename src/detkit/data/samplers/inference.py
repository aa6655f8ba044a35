"""Exact sharding of a dataset across ranks for evaluation."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
from torch.utils.data import Sampler

from detkit.distributed import get_rank, get_world_size, is_dist_avail_and_initialized

__all__ = ["InferenceSampler"]


class InferenceSampler(Sampler[int]):
    """Exact sharding of a dataset across ranks for evaluation: no padding, no duplicates.

    ``DistributedSampler`` pads the dataset so that all ranks get equally many samples, so
    some images are evaluated twice and double-counted in the metrics. This sampler instead
    gives rank ``r`` the contiguous block ``[start, end)`` of indices, the first
    ``len(dataset) % num_replicas`` ranks taking one index more than the others; every index
    goes to exactly one rank and ``len()`` is the rank's exact share.

    The blocks are contiguous rather than strided so that concatenating the ranks' outputs in
    rank order (what :func:`detkit.distributed.all_gather` returns) restores the dataset order,
    and each rank reads neighbouring files. Evaluation needs no equal batch counts: it runs no
    collective per batch.

    Args:
        dataset: the dataset to shard (anything with ``len``), or its length.
        num_replicas: number of ranks (default: the process group's world size, 1 without one).
        rank: this process's rank (default: the process group's rank, 0 without one).

    Raises:
        TypeError: for a ``dataset`` without ``len``.
        ValueError: for a rank out of range, or ``num_replicas > 1`` without ``rank`` and
            without an initialised process group.

    >>> [list(InferenceSampler(10, num_replicas=3, rank=r)) for r in range(3)]
    [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    >>> len(InferenceSampler(range(2), num_replicas=3, rank=2))
    0
    """

    def __init__(
        self, dataset: Sized | int, *, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        if isinstance(dataset, bool) or not isinstance(dataset, (int, np.integer, Sized)):
            raise TypeError(
                f"dataset must be a dataset with len() or an int, got {type(dataset).__name__}"
            )
        if isinstance(dataset, (int, np.integer)) and dataset < 0:
            raise ValueError(f"dataset (a length) must be >= 0, got {dataset}")
        if num_replicas not in (None, 1) and rank is None and not is_dist_avail_and_initialized():
            raise ValueError(
                f"rank is required with num_replicas={num_replicas} when no process group "
                "is initialised"
            )
        num_replicas = get_world_size() if num_replicas is None else num_replicas
        rank = get_rank() if rank is None else rank
        for name, value in (("num_replicas", num_replicas), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must lie in [0, {num_replicas}), got {rank}")
        self.dataset = dataset
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)

    @property
    def total_size(self) -> int:
        """Number of samples in the whole dataset (all ranks together)."""
        return (
            int(self.dataset) if isinstance(self.dataset, (int, np.integer)) else len(self.dataset)
        )

    @property
    def start(self) -> int:
        """First index of this rank's block."""
        share, extra = divmod(self.total_size, self.num_replicas)
        return self.rank * share + min(self.rank, extra)

    @property
    def end(self) -> int:
        """One past the last index of this rank's block."""
        share, extra = divmod(self.total_size, self.num_replicas)
        return self.start + share + (self.rank < extra)

    def set_epoch(self, epoch: int) -> None:
        """Accepted for symmetry with ``DistributedSampler``; the order never changes."""

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start
