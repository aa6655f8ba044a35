"""Training batch samplers: batches drawn from one aspect-ratio group at a time."""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
)

from detkit.data.samplers.inference import InferenceSampler

__all__ = ["GroupedBatchSampler"]

_MODES = ("fill", "keep", "drop")


class GroupedBatchSampler(BatchSampler):
    """Batches of indices that all belong to one group (e.g. one aspect-ratio bin).

    Wraps a base sampler (``RandomSampler``, ``DistributedSampler``, any sampler or list of
    dataset indices) and regroups what it yields, one epoch at a time: each index goes to the
    buffer of its group, and a buffer that reaches ``batch_size`` is yielded at once, so batch
    order follows the base sampler's order as closely as grouping allows. When the base
    sampler is exhausted, each group is left with ``r < batch_size`` indices, handled by
    ``incomplete``:

    * ``"fill"`` (default; torchvision's reference behaviour for the batches it keeps): each
      leftover is topped up to ``batch_size`` with indices of the same group drawn earlier this
      epoch (in draw order, cycling when the group has fewer than ``batch_size`` indices). Every
      batch is full and every drawn index appears at least once; top-ups are duplicates.
    * ``"keep"``: each leftover is yielded as it is (a batch smaller than ``batch_size``).
      Every drawn index appears exactly once.
    * ``"drop"``: leftovers are dropped. Every batch is full, no index repeats, up to
      ``batch_size - 1`` indices per group are skipped this epoch.

    Leftover batches come after all full ones, in the order their first index was drawn. If
    group ``g`` receives ``c_g`` indices in an epoch, the epoch has ``sum(ceil(c_g / batch_size))``
    batches (``floor`` with ``"drop"``), and ``len()`` returns exactly that number (torchvision's
    reference returns ``len(sampler) // batch_size`` and skips whole leftover groups to match it).

    **Distributed training.** Around a ``DistributedSampler`` the ranks' shards differ, and so
    would their batch counts, which hangs DDP at the end of the epoch. The sampler therefore
    computes every rank's shard (``DistributedSampler`` is deterministic given its epoch) and
    gives all ranks the same count: with ``"fill"`` and ``"keep"`` the largest count, reached
    by extra full batches from the rank's largest group (``"fill"``) or by splitting the rank's
    largest batches in two (``"keep"``, so still no duplicates); with ``"drop"`` the smallest,
    by dropping the rank's last batches. ``set_epoch`` passes through to the base sampler.

    ``len()`` is exact for every base sampler: for those whose set of indices varies between
    epochs (sampling with replacement, ``WeightedRandomSampler``), a ``len()`` call outside an
    epoch draws the next epoch's indices in advance and the next iteration uses them.

    Args:
        sampler: the base sampler, yielding dataset indices.
        group_ids: the group (an int ``>= 0``) of every dataset index, e.g. from
            :func:`create_aspect_ratio_groups`; ``group_ids[i]`` is index ``i``'s group, or
            ``-1`` for an index the sampler never draws (drawing it raises ``ValueError``).
        batch_size: indices per batch.
        incomplete: what to do with each group's incomplete last batch: ``"fill"``,
            ``"keep"`` or ``"drop"`` (see above).

    Raises:
        TypeError: for a ``sampler`` that is not iterable or non-integer ``group_ids``.
        ValueError: for a bad ``batch_size`` or ``incomplete``, ``group_ids`` below ``-1``, or
            ``group_ids`` whose length differs from the sampler's dataset.

    >>> import torch
    >>> group_ids = [0, 1, 0, 1, 0, 1, 0]
    >>> sampler = torch.utils.data.SequentialSampler(range(7))
    >>> list(GroupedBatchSampler(sampler, group_ids, 3))  # 6 topped up with 0, 2
    [[0, 2, 4], [1, 3, 5], [6, 0, 2]]
    >>> list(GroupedBatchSampler(sampler, group_ids, 3, incomplete="keep"))
    [[0, 2, 4], [1, 3, 5], [6]]
    >>> len(GroupedBatchSampler(sampler, group_ids, 3, incomplete="drop"))
    2

    Around ``DistributedSampler`` (two ranks simulated in one process here) every rank yields
    the same number of batches; rank 0 repeats a batch of its largest group to match rank 1:

    >>> from torch.utils.data import DistributedSampler
    >>> shards = [
    ...     DistributedSampler(range(7), num_replicas=2, rank=rank, seed=0)
    ...     for rank in (0, 1)
    ... ]
    >>> samplers = [GroupedBatchSampler(shard, group_ids, 2) for shard in shards]
    >>> for grouped in samplers:
    ...     grouped.set_epoch(1)  # each epoch, to reshuffle, as DistributedSampler
    >>> [list(grouped) for grouped in samplers]
    [[[1, 5], [0, 4], [0, 4]], [[6, 2], [3, 3], [0, 6]]]
    """

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        group_ids: Sequence[int] | np.ndarray | torch.Tensor,
        batch_size: int,
        *,
        incomplete: Literal["fill", "keep", "drop"] = "fill",
    ) -> None:
        if isinstance(sampler, (str, bytes)) or not hasattr(sampler, "__iter__"):
            raise TypeError(
                "sampler must be a Sampler or an iterable of dataset indices (not the dataset "
                f"itself), got {type(sampler).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if incomplete not in _MODES:
            raise ValueError(f"incomplete must be one of {_MODES}, got {incomplete!r}")
        groups = _as_group_array(group_ids)
        size = _dataset_size(sampler)
        if size is not None and size != len(groups):
            raise ValueError(
                f"group_ids has {len(groups)} entries but the sampler draws from {size} dataset "
                "samples: give one group id per sample of the dataset the sampler indexes"
            )
        self.sampler = sampler
        self.group_ids = groups
        self.batch_size = int(batch_size)
        self.incomplete = incomplete
        self.drop_last = incomplete == "drop"  # read by tools that inspect batch samplers
        self._reset_state()

    def _reset_state(self) -> None:
        self._pending: tuple[Any, np.ndarray] | None = None  # indices drawn ahead by len()
        self._active = 0  # iterations in progress
        self._active_len = 0
        self._balance_cache: tuple[Any, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_pending", "_active", "_active_len", "_balance_cache"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_state()

    @property
    def num_groups(self) -> int:
        """``max(group_ids) + 1`` (0 without ids)."""
        return int(self.group_ids.max()) + 1 if len(self.group_ids) else 0

    def set_epoch(self, epoch: int) -> None:
        """Pass ``epoch`` to the base sampler (when it has ``set_epoch``), for reshuffling."""
        self._pending = None
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        key = self._epoch_key()
        if self._pending is not None and self._pending[0] == key:
            indices = self._pending[1]
        else:
            indices = self._draw(self.sampler)
        self._pending = None
        groups = self._groups_of(indices)
        batches = _plan(indices, groups, self.batch_size, self.incomplete)
        if self._distributed():
            batches = _balance(batches, self._balanced_count(), indices, groups, self)
        self._active += 1
        self._active_len = len(batches)
        try:
            yield from batches
        finally:
            self._active -= 1

    def __len__(self) -> int:
        if self._distributed():
            return self._balanced_count()
        counts = self._fixed_counts()
        if counts is not None:
            return _count(counts, self.batch_size, self.incomplete)
        key = self._epoch_key()
        if self._active:
            return self._active_len
        if self._pending is None or self._pending[0] != key:
            self._pending = (key, self._draw(self.sampler))
        groups = self._groups_of(self._pending[1])
        return _count(np.bincount(groups), self.batch_size, self.incomplete)

    # -- helpers -------------------------------------------------------------------------------

    def _epoch_key(self) -> Any:
        return getattr(self.sampler, "epoch", None)

    def _distributed(self) -> bool:
        return isinstance(self.sampler, DistributedSampler) and self.sampler.num_replicas > 1

    def _draw(self, sampler: Iterable[int]) -> np.ndarray:
        try:
            # operator.index takes ints, numpy ints and integer tensors, and refuses floats.
            return np.fromiter(map(operator.index, sampler), dtype=np.int64)
        except TypeError as exc:
            raise TypeError(f"the sampler must yield integer indices: {exc}") from None

    def _groups_of(self, indices: np.ndarray) -> np.ndarray:
        if indices.size and (indices.min() < 0 or indices.max() >= len(self.group_ids)):
            bad = indices[(indices < 0) | (indices >= len(self.group_ids))][0]
            raise ValueError(
                f"the sampler yielded index {int(bad)}, but group_ids has "
                f"{len(self.group_ids)} entries (indices 0..{len(self.group_ids) - 1})"
            )
        groups = self.group_ids[indices]
        if groups.size and groups.min() < 0:
            bad = int(indices[groups < 0][0])
            raise ValueError(
                f"the sampler yielded index {bad}, whose group is -1 (no group): "
                "create_aspect_ratio_groups(indices=...) gives -1 to the samples it was not "
                "given; group every sample the sampler draws"
            )
        return groups

    def _fixed_counts(self) -> np.ndarray | None:
        """Per-group counts for base samplers whose epoch always holds the same indices."""
        sampler: Any = self.sampler  # one of the well-known samplers, told apart by type below
        kind = type(sampler)
        if kind in (SequentialSampler, RandomSampler):
            n = len(sampler.data_source)
            repeats, extra = divmod(len(sampler), n) if n else (0, 0)
            if kind is RandomSampler and (sampler.replacement or extra):
                return None  # a random selection: counts vary between epochs
            return np.bincount(self._groups_of(np.arange(n)), minlength=1) * repeats
        if kind is SubsetRandomSampler:
            indices = np.asarray(sampler.indices, dtype=np.int64).reshape(-1)
        elif kind is InferenceSampler:
            indices = np.arange(sampler.start, sampler.end, dtype=np.int64)
        elif isinstance(sampler, (range, list, tuple, np.ndarray)):
            indices = self._draw(sampler)
        else:
            return None
        return np.bincount(self._groups_of(indices), minlength=1)

    def _balanced_count(self) -> int:
        """The batch count every rank yields this epoch (computed from all ranks' shards)."""
        sampler: Any = self.sampler  # a DistributedSampler (checked by the caller)
        key = (
            getattr(sampler, "epoch", None),
            getattr(sampler, "seed", None),
            sampler.num_replicas,
            len(sampler.dataset),
        )
        if self._balance_cache is not None and self._balance_cache[0] == key:
            return self._balance_cache[1]
        counts = []
        for rank in range(sampler.num_replicas):
            replica = copy.copy(sampler)
            replica.rank = rank
            groups = self._groups_of(self._draw(replica))
            counts.append(
                _count(np.bincount(groups, minlength=1), self.batch_size, self.incomplete)
            )
        target = min(counts) if self.incomplete == "drop" else max(counts)
        self._balance_cache = (key, target)
        return target


def _as_group_array(group_ids: Any) -> np.ndarray:
    if isinstance(group_ids, torch.Tensor):
        group_ids = group_ids.detach().cpu().numpy()
    try:
        groups = np.asarray(group_ids)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"group_ids must be a sequence of ints: {exc}") from None
    if groups.ndim != 1:
        raise ValueError(f"group_ids must be one-dimensional, got shape {groups.shape}")
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64)
    if groups.dtype == np.bool_ or not np.issubdtype(groups.dtype, np.integer):
        raise TypeError(f"group_ids must hold ints, got dtype {groups.dtype}")
    if groups.min() < -1:
        position = int(np.flatnonzero(groups < -1)[0])
        raise ValueError(
            f"group_ids must be >= 0 (or -1: no group), got {int(groups[position])} at "
            f"position {position}"
        )
    return groups.astype(np.int64)  # a copy: later edits of the caller's list do not leak in


def _dataset_size(sampler: Any) -> int | None:
    """Size of the dataset a well-known sampler indexes (None when unknown)."""
    kind = type(sampler)
    if kind in (SequentialSampler, RandomSampler):
        return len(sampler.data_source)
    if isinstance(sampler, DistributedSampler):
        dataset: Any = sampler.dataset  # map-style: sized
        return len(dataset)
    if kind is InferenceSampler:
        return sampler.total_size
    return None


def _count(counts: np.ndarray, batch_size: int, incomplete: str) -> int:
    if incomplete == "drop":
        return int((counts // batch_size).sum())
    return int(((counts + batch_size - 1) // batch_size).sum())


def _plan(indices: np.ndarray, groups: np.ndarray, b: int, incomplete: str) -> list[list[int]]:
    """One epoch's batches of dataset indices (see GroupedBatchSampler), vectorized: full
    batches in the order they complete, then each group's leftover by its first draw."""
    n = len(indices)
    if n == 0:
        return []
    by_group = np.argsort(groups, kind="stable")  # draw positions, grouped, in draw order
    starts = np.flatnonzero(np.diff(groups[by_group])) + 1
    full_chunks: list[np.ndarray] = []
    leftovers: list[tuple[int, np.ndarray]] = []
    for positions in np.split(by_group, starts):
        count = len(positions)
        full = count // b
        if full:
            full_chunks.append(positions[: full * b].reshape(full, b))
        rest = positions[full * b :]
        if len(rest) and incomplete != "drop":
            first = int(rest[0])
            if incomplete == "fill":
                rest = np.concatenate([rest, positions[np.arange(b - len(rest)) % count]])
            leftovers.append((first, rest))
    batches: list[list[int]] = []
    if full_chunks:
        chunks = np.concatenate(full_chunks)
        # A full batch is yielded when its last index is drawn.
        chunks = chunks[np.argsort(chunks[:, -1], kind="stable")]
        batches = indices[chunks].tolist()
    leftovers.sort(key=lambda item: item[0])
    batches.extend(indices[rest].tolist() for _, rest in leftovers)
    return batches


def _balance(
    batches: list[list[int]],
    target: int,
    indices: np.ndarray,
    groups: np.ndarray,
    owner: GroupedBatchSampler,
) -> list[list[int]]:
    """Bring this rank's batch count to ``target``, the count shared by all ranks."""
    b, incomplete = owner.batch_size, owner.incomplete
    if len(batches) >= target:
        return batches[:target]
    batches = list(batches)
    if incomplete == "fill":
        largest = int(np.bincount(groups).argmax())
        pool = indices[groups == largest]
        for extra in range(target - len(batches)):
            batches.append(pool[(np.arange(b) + extra * b) % len(pool)].tolist())
        return batches
    while len(batches) < target:  # "keep": split the largest batches, no duplicates
        i = max(range(len(batches)), key=lambda j: len(batches[j]))
        if len(batches[i]) < 2:
            raise RuntimeError(
                f"cannot give this rank {target} batches: its DistributedSampler shard has only "
                f"{len(indices)} indices while another rank's has more (unequal shards)"
            )
        half = (len(batches[i]) + 1) // 2
        batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
    return batches
