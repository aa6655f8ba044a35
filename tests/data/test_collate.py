import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from detkit.data import InstanceMaskDataset, collate_fn


def test_collate_groups_images_and_targets():
    batch = [(torch.zeros(3, 4, 5), {"image_id": 0}), (torch.zeros(3, 6, 2), {"image_id": 1})]
    images, targets = collate_fn(batch)
    assert [tuple(i.shape) for i in images] == [(3, 4, 5), (3, 6, 2)]
    assert [t["image_id"] for t in targets] == [0, 1]
    assert collate_fn([]) == ((), ())


def test_collate_rejects_non_pairs():
    with pytest.raises(TypeError, match="sample 1 of the batch is a tuple of length 3"):
        collate_fn([(1, 2), (1, 2, 3)])
    with pytest.raises(TypeError, match="sample 0 of the batch is a Tensor"):
        collate_fn([torch.zeros(3)])


def test_collate_pickles():
    assert pickle.loads(pickle.dumps(collate_fn)) is collate_fn


def test_loader_with_spawned_workers(synthetic_root):
    images = sorted((synthetic_root / "PNGImages").glob("*.png"))[:4]
    pairs = [(p, synthetic_root / "PedMasks" / f"{p.stem}_mask.png") for p in images]
    loader = DataLoader(
        InstanceMaskDataset(pairs),
        batch_size=2,
        num_workers=2,
        collate_fn=collate_fn,
        multiprocessing_context="spawn",
    )
    ids = [t["image_id"] for _, targets in loader for t in targets]
    assert ids == [0, 1, 2, 3]
