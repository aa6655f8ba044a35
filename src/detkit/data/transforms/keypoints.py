"""Keypoint helpers: left/right flip permutations, mirroring and visibility.

Keypoints follow the target contract (:mod:`detkit.types`): ``Tensor[N, K, 3]`` holding
``x, y, visibility`` in the same continuous pixel coordinates as the boxes (pixel ``i``
covers ``[i, i + 1)``), and a point with visibility ``0`` is the row ``(0, 0, 0)``.

**Flip convention.** A horizontal flip maps a keypoint at ``x`` to ``W - x`` (and a vertical
flip maps ``y`` to ``H - y``), exactly as it maps the box edges ``x1, x2`` to ``W - x2, W - x1``.
In continuous coordinates that is the mirror image: the centre of pixel ``i`` (``i + 0.5``)
lands on the centre of the mirrored pixel ``W - 1 - i`` (``W - i - 0.5``), so keypoints stay
on the same pixels as the flipped image and masks, and a keypoint on a box edge stays on it.
torchvision's reference scripts flip COCO keypoints the same way; ``torchvision.transforms.v2``
uses ``W - 1 - x`` (pixel indices) for keypoint flips but continuous coordinates for its
resize and affine kernels, which is why detkit does not take its flip for keypoints.

**Left and right.** A mirror image turns a left wrist into something that looks like a right
wrist. A flip must therefore also swap the identities of paired keypoints, with a
permutation ``flip_indices``: output keypoint ``k`` is input keypoint ``flip_indices[k]``.
:data:`COCO_PERSON_FLIP_INDICES` is COCO's 17-keypoint person permutation;
:func:`flip_indices_from_names` builds one for any skeleton.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = [
    "COCO_PERSON_FLIP_INDICES",
    "COCO_PERSON_KEYPOINT_NAMES",
    "check_flip_indices",
    "flip_indices_from_names",
    "hide_outside",
    "horizontal_flip_keypoints",
    "vertical_flip_keypoints",
]

#: The 17 keypoints of a COCO person, in annotation order.
COCO_PERSON_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

#: Left/right permutation of :data:`COCO_PERSON_KEYPOINT_NAMES` (the nose stays, every left
#: keypoint trades places with its right twin).
COCO_PERSON_FLIP_INDICES: tuple[int, ...] = (
    0,
    2,
    1,
    4,
    3,
    6,
    5,
    8,
    7,
    10,
    9,
    12,
    11,
    14,
    13,
    16,
    15,
)


def flip_indices_from_names(
    names: Sequence[str], pairs: Iterable[tuple[str, str]] | None = None
) -> tuple[int, ...]:
    """Build a flip permutation from keypoint names and their left/right pairs.

    Args:
        names: the ``K`` keypoint names, in the order of the keypoints tensor.
        pairs: ``(left, right)`` name pairs that trade places on a flip. When omitted, pairs
            are found by name: every name containing ``left`` (or starting with ``l_``)
            is paired with the same name saying ``right`` (``r_``), case preserved.

    Returns:
        ``flip_indices`` of length ``K``: output keypoint ``k`` is input keypoint
        ``flip_indices[k]``; unpaired keypoints map to themselves.

    Raises:
        ValueError: for duplicate names, a pair naming an unknown keypoint or pairing a
            keypoint with itself, or a keypoint listed in two pairs.

    >>> flip_indices_from_names(["head", "left_hand", "right_hand"])
    (0, 2, 1)
    >>> flip_indices_from_names(["tip", "port", "starboard"], [("port", "starboard")])
    (0, 2, 1)
    >>> flip_indices_from_names(COCO_PERSON_KEYPOINT_NAMES) == COCO_PERSON_FLIP_INDICES
    True
    """
    names = list(names)
    position = {}
    for i, name in enumerate(names):
        if name in position:
            raise ValueError(
                f"names: keypoint name {name!r} appears twice (at {position[name]} and {i})"
            )
        position[name] = i
    if pairs is None:
        pairs = _pairs_by_name(names)
    flip = list(range(len(names)))
    paired: dict[str, tuple[str, str]] = {}
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"pairs: each pair must be (left_name, right_name), got {pair!r}")
        left, right = pair
        if left == right:
            raise ValueError(f"pairs: {pair!r} pairs a keypoint with itself")
        for name in (left, right):
            if name not in position:
                raise ValueError(f"pairs: {pair!r} names {name!r}, which is not one of {names}")
            if name in paired:
                raise ValueError(f"pairs: {name!r} is in both {paired[name]!r} and {pair!r}")
            paired[name] = tuple(pair)
        flip[position[left]], flip[position[right]] = position[right], position[left]
    return tuple(flip)


def _pairs_by_name(names: list[str]) -> list[tuple[str, str]]:
    known = set(names)
    pairs = []
    for name in names:
        lower = name.lower()
        if "left" in lower:
            start = lower.index("left")
            twin = name[:start] + _same_case(name[start : start + 4], "right") + name[start + 4 :]
        elif lower.startswith("l_"):
            twin = _same_case(name[0], "r") + name[1:]
        else:
            continue
        if twin in known:
            pairs.append((name, twin))
    return pairs


def _same_case(model: str, word: str) -> str:
    if model.isupper():
        return word.upper()
    if model[0].isupper():
        return word.capitalize()
    return word


def check_flip_indices(
    flip_indices: Sequence[int], num_keypoints: int | None = None
) -> tuple[int, ...]:
    """Validate a flip permutation and return it as a tuple of ints.

    A left/right swap undone by a second flip must be a permutation that is its own
    inverse (``flip_indices[flip_indices[k]] == k``).

    Args:
        flip_indices: the permutation to check.
        num_keypoints: the expected length ``K``, when known.

    Raises:
        ValueError: naming what is wrong: the length, an index out of range, a repeated
            index, or a swap that a second flip would not undo.
        TypeError: for non-integer entries.

    >>> check_flip_indices([0, 2, 1])
    (0, 2, 1)
    >>> check_flip_indices([1, 2, 0])
    Traceback (most recent call last):
    ...
    ValueError: flip_indices: [1, 2, 0] is not its own inverse: keypoint 0 becomes 1 but 1 becomes 2 (a left/right swap must exchange pairs)
    """
    if isinstance(flip_indices, torch.Tensor):
        flip_indices = flip_indices.tolist()
    values = list(flip_indices)
    for value in values:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"flip_indices must hold integers, got {value!r} in {values}")
    values = [int(v) for v in values]
    k = len(values)
    if num_keypoints is not None and k != num_keypoints:
        raise ValueError(
            f"flip_indices has {k} entries but the keypoints have K = {num_keypoints}: "
            "it needs one entry per keypoint"
        )
    for value in values:
        if not 0 <= value < k:
            raise ValueError(f"flip_indices: index {value} is out of range for {k} keypoints")
    if len(set(values)) != k:
        raise ValueError(f"flip_indices: {values} repeats an index; it must be a permutation")
    for i, j in enumerate(values):
        if values[j] != i:
            raise ValueError(
                f"flip_indices: {values} is not its own inverse: keypoint {i} becomes {j} but {j} "
                f"becomes {values[j]} (a left/right swap must exchange pairs)"
            )
    return tuple(values)


def hide_outside(keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Mark keypoints outside the ``width x height`` canvas as not labelled.

    A keypoint whose ``(x, y)`` lies outside ``[0, width] x [0, height]`` (or is not finite)
    gets visibility ``0``, and every row with visibility ``0`` becomes ``(0, 0, 0)``, as the
    contract wants. The input is not modified.

    Args:
        keypoints: ``Tensor[N, K, 3]`` (``x, y, visibility``).
        height: canvas height ``H``.
        width: canvas width ``W``.

    Returns:
        a new ``Tensor[N, K, 3]``.

    >>> hide_outside(torch.tensor([[[3.0, 1.0, 2.0], [5.5, 1.0, 2.0]]]), height=4, width=5)
    tensor([[[3., 1., 2.],
             [0., 0., 0.]]])
    """
    x, y, v = keypoints[..., 0], keypoints[..., 1], keypoints[..., 2]
    inside = (x >= 0) & (x <= width) & (y >= 0) & (y <= height) & (v > 0)
    # where() rather than a product, so that a NaN coordinate becomes 0 too.
    return torch.where(inside.unsqueeze(-1), keypoints, torch.zeros((), dtype=keypoints.dtype))


def _mirror(
    keypoints: torch.Tensor, axis: int, extent: float, flip_indices: Sequence[int] | None
) -> torch.Tensor:
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(
            f"keypoints must be a Tensor[N, K, 3] (x, y, visibility), got shape {tuple(keypoints.shape)}"
        )
    index = None if flip_indices is None else check_flip_indices(flip_indices, keypoints.shape[1])
    return _mirror_checked(keypoints, axis, extent, index)


def _mirror_checked(
    keypoints: torch.Tensor, axis: int, extent: float, index: tuple[int, ...] | None
) -> torch.Tensor:
    """:func:`_mirror` for a ``[N, K, 3]`` tensor and a permutation validated for its ``K``:
    the transforms check both once per sample before they flip."""
    out = keypoints.clone()
    visible = out[..., 2] > 0
    # Invisible rows stay (0, 0, 0) rather than moving to the mirrored origin.
    out[..., axis] = torch.where(visible, extent - out[..., axis], out[..., axis])
    if index is not None:
        out = out.index_select(1, torch.tensor(index, device=out.device))
    return out


def horizontal_flip_keypoints(
    keypoints: torch.Tensor, width: int, flip_indices: Sequence[int] | None
) -> torch.Tensor:
    """Mirror keypoints left to right on a canvas of width ``W``: ``x -> W - x``.

    Args:
        keypoints: ``Tensor[N, K, 3]`` (``x, y, visibility``); not modified.
        width: canvas width ``W``.
        flip_indices: the left/right permutation (see :func:`flip_indices_from_names`), or
            ``None`` to mirror without swapping identities (only right for keypoints that
            have no left or right).

    Returns:
        a new ``Tensor[N, K, 3]``; invisible rows stay ``(0, 0, 0)``.

    >>> kp = torch.tensor([[[1.0, 2.0, 2.0], [3.0, 2.0, 1.0], [0.0, 0.0, 0.0]]])
    >>> horizontal_flip_keypoints(kp, width=10, flip_indices=[0, 2, 1])
    tensor([[[9., 2., 2.],
             [0., 0., 0.],
             [7., 2., 1.]]])
    """
    return _mirror(keypoints, 0, width, flip_indices)


def vertical_flip_keypoints(
    keypoints: torch.Tensor, height: int, flip_indices: Sequence[int] | None
) -> torch.Tensor:
    """Mirror keypoints top to bottom on a canvas of height ``H``: ``y -> H - y``.

    A vertical mirror image swaps left and right as much as a horizontal one does (an
    upside-down mirror image of a person holds up its *other* hand), so it takes the same
    ``flip_indices``.

    Args:
        keypoints: ``Tensor[N, K, 3]``; not modified.
        height: canvas height ``H``.
        flip_indices: the left/right permutation, or ``None`` to mirror without swapping.

    >>> vertical_flip_keypoints(torch.tensor([[[1.0, 2.0, 2.0]]]), height=8, flip_indices=None)
    tensor([[[1., 6., 2.]]])
    """
    return _mirror(keypoints, 1, height, flip_indices)


def _flip_setting(
    flip_indices: Sequence[int] | None, swap_left_right: bool
) -> tuple[int, ...] | None:
    """Validate a transform's ``flip_indices`` / ``swap_left_right`` arguments."""
    if flip_indices is None:
        return None
    if not swap_left_right:
        raise ValueError(
            "flip_indices was given with swap_left_right=False: pass one or the other "
            "(flip_indices to swap left and right, swap_left_right=False to mirror only)"
        )
    return check_flip_indices(flip_indices)


def _flip_repr(flip_indices: tuple[int, ...] | None, swap_left_right: bool) -> dict[str, Any]:
    """The flip arguments a transform's ``repr`` shows (only those that differ from defaults)."""
    args: dict[str, Any] = {} if flip_indices is None else {"flip_indices": flip_indices}
    if not swap_left_right:
        args["swap_left_right"] = False
    return args


def _require_flip_indices(
    flip_indices: tuple[int, ...] | None,
    swap_left_right: bool,
    keypoints: torch.Tensor,
    where: str,
    name: str,
) -> None:
    """Raise unless a mirrored sample's keypoints can be relabelled left/right correctly."""
    k = keypoints.shape[1]
    if flip_indices is None:
        if swap_left_right and k:
            raise ValueError(
                f"{name}: {where} has keypoints (K = {k}) but the transform has no flip_indices. "
                "A mirror image turns a left wrist into what looks like a right wrist, so a flip "
                "must swap left and right keypoints. Pass flip_indices=COCO_PERSON_FLIP_INDICES "
                "for COCO persons or flip_indices_from_names(names, pairs) for your own, or "
                "swap_left_right=False if your keypoints have no left and right."
            )
        return
    if len(flip_indices) != k:
        raise ValueError(
            f"{name}: {where} has K = {k} keypoints but flip_indices has {len(flip_indices)} "
            "entries"
        )
