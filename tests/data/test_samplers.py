"""GroupedBatchSampler and InferenceSampler."""

from __future__ import annotations

import pickle
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from detkit.data import GroupedBatchSampler, InferenceSampler

MODES = ("fill", "keep", "drop")


def streaming_reference(indices, group_ids, batch_size, incomplete):
    """The documented semantics written the plain way (one index at a time), as an oracle."""
    buffers, drawn, batches = {}, {}, []
    for idx in indices:
        g = group_ids[idx]
        drawn.setdefault(g, []).append(idx)
        buffers.setdefault(g, []).append(idx)
        if len(buffers[g]) == batch_size:
            batches.append(buffers.pop(g))  # pop: a refilled group re-enters at the end
    for g, rest in buffers.items():  # dict order = order of each leftover's first draw
        if incomplete == "drop":
            continue
        if incomplete == "fill":
            pool = drawn[g]
            rest = rest + [pool[i % len(pool)] for i in range(batch_size - len(rest))]
        batches.append(rest)
    return batches


class Recording(Sampler):
    """A base sampler the grouped sampler knows nothing about; remembers its last epoch."""

    def __init__(self, indices):
        self.indices = indices  # a list, or a random sampler drawn anew each epoch
        self.last = None

    def __iter__(self):
        self.last = list(self.indices)
        return iter(self.last)

    def __len__(self):
        return len(self.indices)


@st.composite
def grouped_setups(draw, max_n=40):
    n = draw(st.integers(0, max_n))
    num_groups = draw(st.integers(1, 4))
    group_ids = draw(st.lists(st.integers(0, num_groups - 1), min_size=n, max_size=n))
    batch_size = draw(st.integers(1, 5))
    incomplete = draw(st.sampled_from(MODES))
    return n, group_ids, batch_size, incomplete


def check_epoch(batches, drawn, group_ids, batch_size, incomplete):
    """The per-mode guarantees of one epoch, given what the base sampler drew."""
    for batch in batches:
        assert len({group_ids[i] for i in batch}) == 1
        if incomplete == "keep":
            assert 1 <= len(batch) <= batch_size
        else:
            assert len(batch) == batch_size
    got, want = Counter(i for b in batches for i in b), Counter(drawn)
    if incomplete == "keep":
        assert got == want
    elif incomplete == "fill":
        assert not want - got  # every drawn index at least as often as drawn
        assert set(got) == set(want)  # extras are repeats of drawn indices
        groups = len({group_ids[i] for i in drawn})
        assert got.total() - want.total() <= groups * (batch_size - 1)
    else:
        assert not got - want  # nothing that was not drawn, nothing more often
        per_group = Counter(group_ids[i] for i in (want - got).elements())
        assert all(skipped < batch_size for skipped in per_group.values())


@given(setup=grouped_setups(), seed=st.integers(0, 2**16))
def test_matches_the_streaming_semantics_for_any_base_sampler(setup, seed):
    n, group_ids, batch_size, incomplete = setup
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    drawn = order + order[: n // 3]  # repeats, as sampling with replacement gives
    for base in (SequentialSampler(range(n)), Recording(drawn)):
        sampler = GroupedBatchSampler(base, group_ids, batch_size, incomplete=incomplete)
        batches = list(sampler)
        epoch = list(range(n)) if isinstance(base, SequentialSampler) else base.last
        assert batches == streaming_reference(epoch, group_ids, batch_size, incomplete)
        check_epoch(batches, epoch, group_ids, batch_size, incomplete)
        assert len(sampler) == len(batches)


@settings(max_examples=30)
@given(setup=grouped_setups(), seed=st.integers(0, 2**16))
def test_random_sampler_every_index_at_least_once_and_exact_len(setup, seed):
    n, group_ids, batch_size, incomplete = setup
    if n == 0:
        return  # RandomSampler refuses an empty dataset
    base = RandomSampler(range(n), generator=torch.Generator().manual_seed(seed))
    sampler = GroupedBatchSampler(base, group_ids, batch_size, incomplete=incomplete)
    for _ in range(2):  # two epochs, different orders, same guarantees
        expected = len(sampler)
        batches = list(sampler)
        assert len(batches) == expected
        check_epoch(batches, list(range(n)), group_ids, batch_size, incomplete)
    if incomplete != "drop":  # ceil per group: more than the reference's len(sampler) // b
        sizes = Counter(group_ids)
        assert expected == sum(-(-c // batch_size) for c in sizes.values())


@settings(max_examples=20)
@given(
    setup=grouped_setups(max_n=30),
    seed=st.integers(0, 100),
    replacement=st.booleans(),
)
def test_len_is_exact_when_the_epochs_indices_are_random(setup, seed, replacement):
    n, group_ids, batch_size, incomplete = setup
    if n == 0:
        return
    torch.manual_seed(seed)
    weights = torch.rand(n) + 0.1
    num_samples = n if replacement else max(1, n // 2)
    base = Recording(WeightedRandomSampler(weights, num_samples, replacement=replacement))
    sampler = GroupedBatchSampler(base, group_ids, batch_size, incomplete=incomplete)
    for _ in range(3):
        announced = len(sampler)  # draws the epoch ahead; the iteration must use it
        assert len(sampler) == announced  # asking twice draws nothing new
        iterator = iter(sampler)
        batches = list(iterator) if announced == 0 else [next(iterator)]
        if announced:
            assert len(sampler) == announced  # during the epoch: that epoch's length
            batches += list(iterator)
        assert len(batches) == announced
        check_epoch(batches, base.last, group_ids, batch_size, incomplete)


def distributed(n, world, group_ids, batch_size, incomplete, *, seed, epoch, drop_last=False):
    ranks = []
    for rank in range(world):
        base = DistributedSampler(
            range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=drop_last
        )
        sampler = GroupedBatchSampler(base, group_ids, batch_size, incomplete=incomplete)
        sampler.set_epoch(epoch)
        assert base.epoch == epoch  # passes through
        ranks.append((list(base), len(sampler), list(sampler)))
    return ranks


@settings(max_examples=40)
@given(
    setup=grouped_setups(max_n=50),
    world=st.integers(2, 4),
    seed=st.integers(0, 1000),
    epoch=st.integers(0, 5),
    drop_last=st.booleans(),
)
def test_simulated_ranks_partition_the_epoch_and_agree_on_the_batch_count(
    setup, world, seed, epoch, drop_last
):
    n, group_ids, batch_size, incomplete = setup
    ranks = distributed(
        n, world, group_ids, batch_size, incomplete, seed=seed, epoch=epoch, drop_last=drop_last
    )
    counts = {len(batches) for _, _, batches in ranks}
    assert len(counts) == 1, "ranks yield different batch counts: DDP would hang"
    seen = []
    for drawn, announced, batches in ranks:
        assert announced == len(batches)
        for batch in batches:
            assert len({group_ids[i] for i in batch}) == 1
            assert len(batch) == batch_size or incomplete == "keep"
        if incomplete == "keep":
            assert Counter(i for b in batches for i in b) == Counter(drawn)
        else:
            assert set(i for b in batches for i in b) <= set(drawn)
        if incomplete == "fill":
            assert set(i for b in batches for i in b) == set(drawn)
        seen.append({i for b in batches for i in b})
    if n % world == 0 or drop_last:  # no padding by the DistributedSampler
        for a in range(world):
            for b in range(a + 1, world):
                assert not seen[a] & seen[b], "an index went to two ranks"
    if incomplete != "drop" and not drop_last:
        assert set().union(*seen) == set(range(n))


def test_set_epoch_reshuffles_through_a_distributed_sampler():
    group_ids = [i % 3 for i in range(60)]
    base = DistributedSampler(range(60), num_replicas=2, rank=1, seed=7)
    sampler = GroupedBatchSampler(base, group_ids, 4)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second
    assert len(second) == len(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_len_is_fixed_for_a_sampler_that_stays_fixed_and_does_not_draw():
    group_ids = [0, 0, 1, 2, 2, 2, 2]
    sampler = GroupedBatchSampler(RandomSampler(range(7)), group_ids, 2)
    state = torch.get_rng_state()
    assert len(sampler) == 1 + 1 + 2  # ceil(2/2) + ceil(1/2) + ceil(4/2)
    assert torch.equal(torch.get_rng_state(), state), "len() consumed the global RNG"
    assert len(GroupedBatchSampler(RandomSampler(range(7)), group_ids, 2, incomplete="drop")) == 3


def test_pickles_and_feeds_a_data_loader():
    group_ids = [0, 1] * 5
    sampler = GroupedBatchSampler(SequentialSampler(range(10)), group_ids, 3)
    list(sampler)
    clone = pickle.loads(pickle.dumps(sampler))
    assert list(clone) == list(sampler) == [[0, 2, 4], [1, 3, 5], [6, 8, 0], [7, 9, 1]]
    loader = DataLoader(torch.arange(10) * 10, batch_sampler=sampler)
    assert [b.tolist() for b in loader] == [[0, 20, 40], [10, 30, 50], [60, 80, 0], [70, 90, 10]]
    assert len(loader) == 4


def test_wraps_an_inference_sampler_and_plain_lists():
    group_ids = [0, 1, 1, 0, 1]
    shard = InferenceSampler(5, num_replicas=2, rank=0)  # indices 0, 1, 2
    sampler = GroupedBatchSampler(shard, group_ids, 2, incomplete="keep")
    assert list(sampler) == [[1, 2], [0]] and len(sampler) == 2
    assert list(GroupedBatchSampler([4, 3, 2], group_ids, 2)) == [[4, 2], [3, 3]]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int"),
        ({"batch_size": True}, TypeError, "batch_size must be an int"),
        ({"incomplete": "pad"}, ValueError, "incomplete must be one of"),
        ({"group_ids": [0, -2, 0, 0]}, ValueError, r"must be >= 0 \(or -1: no group\), got -2 at"),
        ({"group_ids": [0.0, 1.0, 0.0, 1.0]}, TypeError, "group_ids must hold ints"),
        ({"group_ids": [[0, 1], [0, 1]]}, ValueError, "group_ids must be one-dimensional"),
        ({"group_ids": [0, 1, 0]}, ValueError, "group_ids has 3 entries .* 4 dataset samples"),
        ({"sampler": torch.utils.data.TensorDataset(torch.zeros(4))}, TypeError, "sampler must"),
        ({"sampler": "0123"}, TypeError, "sampler must"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, error, match):
    arguments = {"sampler": SequentialSampler(range(4)), "group_ids": [0, 1, 0, 1], "batch_size": 2}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        GroupedBatchSampler(**arguments)


def test_an_index_whose_group_is_minus_one_is_named_when_drawn():
    # -1 (no group) is fine for indices the sampler never draws: a subset of the dataset.
    sampler = GroupedBatchSampler(SubsetRandomSampler([0, 2, 3]), [0, -1, 1, 0], 2)
    batches = list(sampler)
    groups = [0, -1, 1, 0]
    assert {i for batch in batches for i in batch} == {0, 2, 3}
    assert all(len({groups[i] for i in batch}) == 1 for batch in batches)
    assert len(sampler) == len(batches) == 2
    with pytest.raises(ValueError, match="yielded index 1, whose group is -1"):
        list(GroupedBatchSampler(SequentialSampler(range(4)), [0, -1, 1, 0], 2))
    with pytest.raises(ValueError, match="yielded index 1, whose group is -1"):
        len(GroupedBatchSampler(SequentialSampler(range(4)), [0, -1, 1, 0], 2))


def test_an_index_without_a_group_id_is_named():
    sampler = GroupedBatchSampler([0, 1, 5], [0, 0, 1], 2)
    with pytest.raises(ValueError, match="yielded index 5, but group_ids has 3 entries"):
        list(sampler)


def test_does_not_keep_a_reference_to_the_callers_group_list():
    group_ids = [0, 0, 1, 1]
    sampler = GroupedBatchSampler(SequentialSampler(range(4)), group_ids, 2)
    group_ids[:] = [0, 1, 0, 1]
    assert list(sampler) == [[0, 1], [2, 3]]


# -- InferenceSampler ---------------------------------------------------------------------------


@given(n=st.integers(0, 60), world=st.integers(1, 9))
def test_inference_sampler_gives_each_index_to_exactly_one_rank(n, world):
    shards = [InferenceSampler(range(n), num_replicas=world, rank=r) for r in range(world)]
    concatenated = [i for shard in shards for i in shard]
    assert concatenated == list(range(n))  # rank order restores the dataset order
    lengths = [len(shard) for shard in shards]
    assert lengths == [len(list(shard)) for shard in shards]
    assert max(lengths) - min(lengths) <= 1
    assert sum(lengths) == n


def test_inference_sampler_without_a_process_group():
    sampler = InferenceSampler(5)
    assert (sampler.num_replicas, sampler.rank, list(sampler)) == (1, 0, [0, 1, 2, 3, 4])
    sampler.set_epoch(3)
    assert list(sampler) == [0, 1, 2, 3, 4]
    assert list(pickle.loads(pickle.dumps(InferenceSampler(7, num_replicas=2, rank=1)))) == [
        4,
        5,
        6,
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_replicas": 2}, ValueError, "rank is required with num_replicas=2"),
        ({"num_replicas": 2, "rank": 2}, ValueError, r"rank must lie in \[0, 2\), got 2"),
        ({"rank": 1}, ValueError, r"rank must lie in \[0, 1\)"),
        ({"num_replicas": 0, "rank": 0}, ValueError, "num_replicas must be >= 1"),
        ({"num_replicas": 2.0, "rank": 0}, TypeError, "num_replicas must be an int"),
        ({"dataset": object()}, TypeError, "dataset must be a dataset with len"),
        ({"dataset": -1}, ValueError, "must be >= 0"),
    ],
)
def test_inference_sampler_argument_errors(kwargs, error, match):
    arguments = {"dataset": 10, **kwargs}
    with pytest.raises(error, match=match):
        InferenceSampler(**arguments)
