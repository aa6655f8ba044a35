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

import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from detkit.tv_tensors import KeyPointsWithVisibility, check_flip_indices, hide_outside, plain

__all__ = [
    "COCO_PERSON_FLIP_INDICES",
    "COCO_PERSON_KEYPOINT_NAMES",
    "check_flip_indices",
    "flip_indices_from_names",
    "hide_outside",
    "horizontal_flip_keypoints",
    "vertical_flip_keypoints",
]
# flip_setting, flip_arguments_repr, require_flip_indices and mirror_keypoints are shared
# with the flip transforms and the v2 adapter: documented here, not exported.

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
            are found by name, case preserved, in the common conventions: the word ``left``
            / ``right`` (``left_eye``, ``LeftEye``, ``frontLeft``), a prefix letter
            (``l_eye``, ``R.hand``), a suffix letter (``wing_l``, ``hand.R``) or a camel-case
            letter (``eyeL``, ``LEye``), or a bare first letter when the twin is among the
            names (``lwri`` / ``rwri``). A name that looks sided but has no twin is left in
            place with a :class:`UserWarning` naming it.

    Returns:
        ``flip_indices`` of length ``K``: output keypoint ``k`` is input keypoint
        ``flip_indices[k]``; unpaired keypoints map to themselves.

    Raises:
        ValueError: for duplicate names, a pair naming an unknown keypoint or pairing a
            keypoint with itself, or a keypoint listed in two pairs.

    >>> flip_indices_from_names(["head", "left_hand", "right_hand"])
    (0, 2, 1)
    >>> flip_indices_from_names(["beak", "wing_l", "wing_r", "eyeR", "eyeL"])
    (0, 2, 1, 4, 3)
    >>> names = ["tip", "port", "starboard"]
    >>> flip_indices_from_names(names, [("port", "starboard")])
    (0, 2, 1)
    >>> indices = flip_indices_from_names(COCO_PERSON_KEYPOINT_NAMES)
    >>> indices == COCO_PERSON_FLIP_INDICES
    True
    """
    names = list(names)
    position: dict[str, int] = {}
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
            paired[name] = (left, right)
        flip[position[left]], flip[position[right]] = position[right], position[left]
    return tuple(flip)


# Where a keypoint name says its side, and what the side word is: "left_eye", "LeftEye",
# "frontLeft" (a whole word), "l_eye" / "L.hand" (a prefix letter), "wing_l" / "hand.R" (a
# suffix letter), "eyeL" / "LEye" / "lEye" (a camel-case letter).
_SIDED = (
    re.compile(
        r"(?:^|(?<=[^A-Za-z]))(left|right|Left|Right|LEFT|RIGHT)(?![a-z])"
        r"|(?<=[a-z])(Left|Right|LEFT|RIGHT)(?![a-z])"
    ),
    re.compile(r"^([lLrR])(?=[_\-. ])"),
    re.compile(r"(?<=[_\-. ])([lLrR])$"),
    re.compile(r"(?<=[a-z0-9])([LR])$"),
    re.compile(r"^([LR])(?=[A-Z][a-z])|^([lr])(?=[A-Z])"),
)
_TWIN = {"left": "right", "right": "left", "l": "r", "r": "l"}


def _side(name: str) -> tuple[str, str] | None:
    """``(side, name with the side word replaced by its twin)``, or ``None`` if unsided."""
    for pattern in _SIDED:
        match = pattern.search(name)
        if match is None:
            continue
        word = match.group(match.lastindex or 0)
        start, end = match.span(match.lastindex or 0)
        twin = _same_case(word, _TWIN[word.lower()])
        return word.lower()[0], name[:start] + twin + name[end:]
    return None


def _bare_letter_twin(name: str, known: set[str]) -> str | None:
    """The twin of a name whose side is a bare first letter (``lwri`` / ``rwri``, as MPII's
    short names go), when that twin is among the names; ``lip`` alone is no side."""
    twin = {"l": "r", "r": "l", "L": "R", "R": "L"}.get(name[:1])
    if twin is None or len(name) < 2 or twin + name[1:] not in known:
        return None
    return twin + name[1:]


def _pairs_by_name(names: list[str]) -> list[tuple[str, str]]:
    known = set(names)
    pairs = []
    lonely = []
    for name in names:
        sided = _side(name)
        if sided is None:
            twin = _bare_letter_twin(name, known)
            if twin is not None and _side(twin) is None and name[0] in "lL":
                pairs.append((name, twin))
            continue
        side, twin = sided
        if twin in known:
            if side == "l":
                pairs.append((name, twin))
        else:
            lonely.append(name)
    if lonely:
        warnings.warn(
            f"flip_indices_from_names: {lonely} look like left/right keypoints but have no "
            "twin among the names; they will not be swapped on flips. Pass pairs= to pair "
            "them explicitly.",
            UserWarning,
            stacklevel=3,
        )
    return pairs


def _same_case(model: str, word: str) -> str:
    if model.isupper():
        return word.upper()
    if model[0].isupper():
        return word.capitalize()
    return word


def _mirror(
    keypoints: torch.Tensor, axis: int, extent: float, flip_indices: Sequence[int] | None
) -> torch.Tensor:
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(
            f"keypoints must be a Tensor[N, K, 3] (x, y, visibility), got shape {tuple(keypoints.shape)}"
        )
    index = None if flip_indices is None else check_flip_indices(flip_indices, keypoints.shape[1])
    return mirror_keypoints(keypoints, axis, extent, index)


def mirror_keypoints(
    keypoints: torch.Tensor, axis: int, extent: float, index: Sequence[int] | None
) -> torch.Tensor:
    """Mirror ``[N, K, 3]`` keypoints along ``axis`` (0: ``x -> extent - x``, 1: ``y``) and
    reorder them with ``index``, a permutation already checked for their ``K``.

    The kernel of the flips (which check shape and permutation once per sample); invisible
    rows stay ``(0, 0, 0)``. The input is not modified and keeps its class.

    >>> mirror_keypoints(torch.tensor([[[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]]), 0, 10, (1, 0))
    tensor([[[0., 0., 0.],
             [9., 2., 2.]]])
    """
    out = plain(keypoints).clone()
    visible = out[..., 2] > 0
    # Invisible rows stay (0, 0, 0) rather than moving to the mirrored origin.
    out[..., axis] = torch.where(visible, extent - out[..., axis], out[..., axis])
    if index is not None:
        out = out.index_select(1, torch.tensor(index, device=out.device))
    if isinstance(keypoints, KeyPointsWithVisibility):
        return KeyPointsWithVisibility.wrap(out, like=keypoints)
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

    >>> kp = torch.tensor([[[1.0, 2.0, 2.0]]])
    >>> vertical_flip_keypoints(kp, height=8, flip_indices=None)
    tensor([[[1., 6., 2.]]])
    """
    return _mirror(keypoints, 1, height, flip_indices)


def flip_setting(
    flip_indices: Sequence[int] | None, swap_left_right: bool
) -> tuple[int, ...] | None:
    """Validate a transform's ``flip_indices`` / ``swap_left_right`` arguments.

    Returns the checked permutation, or ``None`` when none was given.

    >>> flip_setting([0, 2, 1], True)
    (0, 2, 1)
    """
    if flip_indices is None:
        return None
    if not swap_left_right:
        raise ValueError(
            "flip_indices was given with swap_left_right=False: pass one or the other "
            "(flip_indices to swap left and right, swap_left_right=False to mirror only)"
        )
    return check_flip_indices(flip_indices)


def flip_arguments_repr(
    flip_indices: tuple[int, ...] | None, swap_left_right: bool
) -> dict[str, Any]:
    """The flip arguments a transform's ``repr`` shows (only those that differ from defaults).

    >>> flip_arguments_repr(None, False)
    {'swap_left_right': False}
    """
    args: dict[str, Any] = {} if flip_indices is None else {"flip_indices": flip_indices}
    if not swap_left_right:
        args["swap_left_right"] = False
    return args


def require_flip_indices(
    flip_indices: tuple[int, ...] | None,
    swap_left_right: bool,
    keypoints: torch.Tensor,
    where: str,
    name: str,
) -> None:
    """Raise unless a mirrored sample's keypoints can be relabelled left/right correctly.

    Args:
        flip_indices: the transform's permutation (``None`` when it has none).
        swap_left_right: the transform's ``swap_left_right``.
        keypoints: the sample's ``[N, K, 3]`` keypoints.
        where: the sample's name (:func:`detkit.types.sample_name`).
        name: the transform's name.

    Raises:
        ValueError: without a permutation for ``K > 0`` keypoints (unless
            ``swap_left_right=False``), or with one of another length.
    """
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
