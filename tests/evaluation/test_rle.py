"""The RLE encoder writes pycocotools' bytes exactly; the RLE checker reads them back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from torchvision import tv_tensors

from detkit.evaluation import masks_to_rle
from detkit.evaluation._rle import (
    RleEncoder,
    counts_to_strings,
    encode_masks,
    pack_on_device,
    split_bytes,
    string_totals,
)

SHAPES = ("empty", "full", "pixel", "box", "columns", "noise")


@st.composite
def shaped_masks(draw, max_height: int = 40, max_width: int = 150):
    """bool [N, H, W]: empty, all-ones, 1-pixel (corners too), boxes touching borders, full
    height stripes (runs that go on from one column into the next) and noise. Widths go past
    the encoder's 64-column blocks."""
    n = draw(st.integers(1, 4))
    h, w = draw(st.integers(1, max_height)), draw(st.integers(1, max_width))
    masks = np.zeros((n, h, w), dtype=bool)
    for mask in masks:
        shape = draw(st.sampled_from(SHAPES))
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
        if shape == "full":
            mask[:] = True
        elif shape == "pixel":
            mask[y0, x0] = True
        elif shape == "box":
            mask[y0:y1, x0:x1] = True
        elif shape == "columns":
            mask[:, x0:x1] = True
            mask[y0:y1, x0] = draw(st.booleans())
        elif shape == "noise":
            seed = draw(st.integers(0, 2**16))
            mask[y0:y1, x0:x1] = np.random.default_rng(seed).random((y1 - y0, x1 - x0)) < 0.5
    return masks


def pycocotools_counts(masks: np.ndarray) -> list[bytes]:
    """pycocotools' encoding of each full mask, the reference."""
    return [mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"] for m in masks]


@settings(max_examples=300, deadline=None)
@given(masks=shaped_masks())
def test_crop_and_splice_equals_pycocotools_encode_of_the_full_mask(masks):
    expected = pycocotools_counts(masks)
    encoder = RleEncoder()  # reused: scratch buffers from earlier calls must not leak in
    one_at_a_time = RleEncoder()
    one_at_a_time.CHUNK_BYTES = 1  # every mask its own chunk
    probabilities = torch.from_numpy(np.where(masks, 0.75, 0.25).astype(np.float32))
    for source in (
        torch.from_numpy(masks),
        torch.from_numpy(masks.astype(np.uint8)),
        masks,
        masks.astype(np.int16) * -3,  # negative integers are set pixels
        probabilities,
        probabilities[:, None],
        probabilities.double(),
        probabilities.half(),
        probabilities.bfloat16(),
        probabilities.numpy(),
        tv_tensors.Mask(probabilities),
        probabilities.transpose(1, 2).contiguous().transpose(1, 2),  # not contiguous
    ):
        assert encoder(source, 0.5) == expected
        assert one_at_a_time(source, 0.5) == expected
    assert encode_masks(torch.from_numpy(masks), 0.5) == expected


@settings(max_examples=150, deadline=None)
@given(masks=shaped_masks())
def test_the_accelerator_path_gives_the_same_bytes(masks):
    """``pack_on_device`` thresholds and bit-packs where the masks are; run here on CPU
    tensors standing in for CUDA ones (it has not run on a GPU in the test suite)."""
    expected = pycocotools_counts(masks)
    n, h, w = masks.shape
    encoder = RleEncoder()
    for source in (torch.from_numpy(masks), torch.from_numpy(np.where(masks, 0.9, 0.1))):
        packed = pack_on_device(source, 0.5)
        rows, binary = encoder.frames(n, h, w)
        packed.unpack(binary)
        counts, lengths = encoder.frame_counts(rows, n, h, w)
        assert split_bytes(*counts_to_strings(counts, lengths)) == expected
        # By pieces, as the encoder unpacks chunks of masks.
        for start in range(n):
            rows, binary = encoder.frames(1, h, w)
            packed[start : start + 1].unpack(binary)
            counts, lengths = encoder.frame_counts(rows, 1, h, w)
            assert split_bytes(*counts_to_strings(counts, lengths)) == expected[start : start + 1]


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.sampled_from([np.nan, -np.nan, -np.inf, -1.0, -0.0, 0.0, 0.1, 0.5, 0.75, np.inf]),
        min_size=1,
        max_size=60,
    ),
    threshold=st.sampled_from([0.0, 0.1, 0.5, 0.99, -0.5]),
)
def test_thresholds_nan_and_infinities_as_numpy_compares(values, threshold):
    array = np.array(values, dtype=np.float32).reshape(1, len(values), 1)
    for dtype in (np.float32, np.float16, np.float64):
        masks = array.astype(dtype)
        assert encode_masks(masks, threshold) == pycocotools_counts(masks > threshold)


def test_large_masks_and_degenerate_shapes():
    masks = np.zeros((3, 480, 640), dtype=bool)
    masks[0, 100:300, 200:500] = True
    masks[1] = True
    masks[2, :, 639] = True
    assert masks_to_rle(torch.from_numpy(masks)) == mask_utils.encode(
        np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    )
    for shape in ((0, 5, 5), (2, 0, 4), (2, 3, 0)):
        reference = mask_utils.encode(np.zeros(shape[1:] + shape[:1], np.uint8, order="F"))
        assert encode_masks(np.zeros(shape, np.uint8), 0.5) == [r["counts"] for r in reference]
    with pytest.raises(ValueError, match=r"masks must have shape \[N, 1, H, W\]"):
        encode_masks(np.zeros((2, 2, 3, 3)), 0.5)


@settings(max_examples=100, deadline=None)
@given(masks=shaped_masks())
def test_string_totals_reads_back_every_encoded_mask(masks):
    counts = pycocotools_counts(masks)
    totals, valid = string_totals(counts)
    assert valid.all()
    assert totals.tolist() == [masks.shape[1] * masks.shape[2]] * len(masks)


def test_string_totals_flags_malformed_strings():
    strings = [b"52", b"", b"b035000f", b"b0 3", b"\x7f", b"0" + b"o" * 8 + b"0", b"3?"]
    totals, valid = string_totals(strings)
    assert valid.tolist() == [True, True, False, False, False, False, True]
    assert totals[[0, 1, 6]].tolist() == [7, 0, 3 + 15]


def test_masks_on_an_accelerator_are_thresholded_there(monkeypatch):
    """A prediction's masks off the CPU reach ``pack_on_device`` (thresholded and packed
    where they are, before the copy), from ``CocoEvaluator.update`` down. ``meta`` tensors
    stand in for CUDA ones: they have a device but no data, so the stand-in writes the
    thresholded CPU copy."""
    from detkit.evaluation import CocoEvaluator

    probabilities = torch.zeros(2, 1, 6, 9)
    probabilities[0, 0, 1:4, 2:7] = 0.8
    probabilities[1, 0, 5, :] = 0.6
    seen = []

    def on_device(masks, threshold):
        seen.append((masks.device.type, tuple(masks.shape), threshold))
        return pack_on_device(probabilities[:, 0], threshold)

    monkeypatch.setattr("detkit.evaluation._rle.pack_on_device", on_device)
    expected = [mask_utils.encode(np.asfortranarray(m)) for m in probabilities[:, 0].numpy() > 0.5]
    assert masks_to_rle(probabilities.to("meta")) == expected
    assert seen == [("meta", (2, 6, 9), 0.5)]

    target = {
        "boxes": torch.tensor([[2.0, 1.0, 7.0, 4.0], [0.0, 5.0, 9.0, 6.0]]),
        "labels": torch.tensor([1, 1]),
        "masks": (probabilities[:, 0] > 0.5).to(torch.uint8),
        "image_id": 3,
    }
    prediction = {
        "boxes": target["boxes"],
        "scores": torch.tensor([0.9, 0.8]),
        "labels": target["labels"],
        "masks": probabilities.to("meta"),
    }
    evaluator = CocoEvaluator("segm")
    evaluator.update([prediction], [target])
    assert seen[1:] == [("meta", (2, 6, 9), 0.5)]
    assert evaluator.compute()["segm"]["AP"] == 1.0


def test_encoders_of_threads_do_not_share_buffers():
    """``encode_masks`` keeps scratch buffers between calls, one set per thread."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    batches = [rng.random((3, 20 + i, 30 + 7 * i)) > 0.6 for i in range(8)]
    expected = [pycocotools_counts(masks) for masks in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            assert list(pool.map(lambda m: encode_masks(m, 0.5), batches)) == expected
