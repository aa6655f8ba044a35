"""Where weights come from: torchvision's enums, their names, local files, torch.hub's cache.

Every ``weights`` and ``weights_backbone`` argument of detkit is a :data:`WeightsSource`
and goes through :func:`resolve_weights`, so that an enum, its name and a local file mean the
same thing everywhere. A download goes through :func:`download_weights`, which turns every
failure into a :class:`WeightsDownloadError` that says how to pass a copy fetched elsewhere.

Only :class:`WeightsDownloadError` is part of detkit's API (re-exported by
:mod:`detkit.models`); the functions are the one home of these steps for detkit's builders.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TypeAlias
from urllib.parse import urlparse

import torch
from torchvision.models import WeightsEnum, get_weight

__all__ = ["WeightsDownloadError"]

#: What a ``weights`` or ``weights_backbone`` argument may be: a torchvision weights enum,
#: its name (``"DEFAULT"``, ``"IMAGENET1K_V2"``, ``"ResNet50_Weights.IMAGENET1K_V2"``), a
#: local file, or ``None`` (random initialisation). Written without quotes, so that
#: documentation tools can evaluate the signatures that use it.
WeightsSource: TypeAlias = WeightsEnum | str | os.PathLike[str] | None

# What a file name ends with when a string is a file, not a weights name.
_FILE_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin", ".tar")

# torchvision's detector weights trained before its FrozenBatchNorm2d eps fix (vision#2933):
# its builders set eps=0 on every frozen batch norm after loading them, and so does detkit,
# also when the same file is passed as a local path (recognised by its download file name).
_LEGACY_EPS_ZERO = (
    "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
    "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
    "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1",
    "RetinaNet_ResNet50_FPN_Weights.COCO_V1",
)


#: Seconds a weights download waits for the server (to connect, or for its next bytes)
#: before it fails, unless the process set a default socket timeout of its own.
DOWNLOAD_TIMEOUT = 60.0


class WeightsDownloadError(OSError):
    """Torchvision weights could not be downloaded (offline, blocked, or a corrupt file).

    The message names the weights, the URL, the reason, and the two ways to use a copy
    fetched elsewhere: pass its path instead of the enum, or put it in torch.hub's cache.
    The original exception is chained as ``__cause__``.
    """


def resolve_weights(
    weights: WeightsSource, enum_class: type[WeightsEnum] | None, argument: str
) -> WeightsEnum | Path | None:
    """Turn a ``weights`` argument into an enum member, an existing file path, or ``None``.

    Args:
        weights: what the user passed.
        enum_class: the weights enum of the model the weights are for; ``None`` when the
            model is an instance or has no torchvision weights (then only full names such as
            ``"ResNet50_Weights.IMAGENET1K_V2"``, enums and files resolve).
        argument: the argument's name in the user's call, for messages.

    Raises:
        TypeError: an enum of another model, or not a weights source at all.
        FileNotFoundError: neither a name of ``enum_class`` nor an existing file.

    >>> from torchvision.models import ResNet18_Weights
    >>> resolve_weights("DEFAULT", ResNet18_Weights, "weights")
    ResNet18_Weights.IMAGENET1K_V1
    """
    if weights is None:
        return None
    if isinstance(weights, WeightsEnum):
        if enum_class is not None and not isinstance(weights, enum_class):
            raise TypeError(
                f"{argument}={weights!r} does not fit this model: expected {enum_class.__name__}"
            )
        return weights
    if isinstance(weights, os.PathLike):
        return _existing_file(Path(weights), argument, enum_class)
    if not isinstance(weights, str):
        raise TypeError(
            f"{argument} must be a torchvision weights enum, its name, or a file path; "
            f"got {type(weights).__name__}"
        )
    if looks_like_weights_name(weights):
        member = _enum_member(weights, enum_class)
        if member is not None:
            return member
        if enum_class is None and not Path(weights).is_file():
            raise FileNotFoundError(
                f"{argument}={weights!r} is neither an existing file nor a full weights name "
                "such as 'ResNet50_Weights.IMAGENET1K_V2': a short name needs a model name to "
                "resolve against, so with a model instance pass the enum or a file"
            )
    return _existing_file(Path(weights), argument, enum_class)


def looks_like_weights_name(text: str) -> bool:
    """Whether a string reads as a weights name rather than a file path.

    >>> looks_like_weights_name("DEFAULT"), looks_like_weights_name("runs/last.pth")
    (True, False)
    """
    return not text.lower().endswith(_FILE_SUFFIXES) and not any(
        sep in text for sep in ("/", "\\", os.sep)
    )


def _enum_member(name: str, enum_class: type[WeightsEnum] | None) -> WeightsEnum | None:
    if "." in name:
        try:
            member = get_weight(name)
        except (ValueError, KeyError, AttributeError):
            return None
        if enum_class is not None and not isinstance(member, enum_class):
            raise TypeError(f"{name!r} does not fit this model: expected {enum_class.__name__}")
        return member
    if enum_class is not None and name in enum_class.__members__:
        return enum_class[name]
    return None


def _existing_file(path: Path, argument: str, enum_class: type[WeightsEnum] | None) -> Path:
    if path.is_file():
        return path
    names = ""
    if enum_class is not None:
        names = f"a name of {enum_class.__name__} ({', '.join(enum_class.__members__)}) nor "
    raise FileNotFoundError(f"{argument}={str(path)!r} is neither {names}an existing file")


def hub_cache_path(weights: WeightsEnum) -> Path:
    """Where torch.hub keeps (and looks for) the file of ``weights``.

    >>> from torchvision.models import ResNet18_Weights
    >>> hub_cache_path(ResNet18_Weights.IMAGENET1K_V1).name
    'resnet18-f37072fd.pth'
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def download_weights(weights: WeightsEnum, argument: str, *, progress: bool = True) -> Path:
    """Download ``weights`` into torch.hub's cache unless they are there; return the file.

    Raises:
        WeightsDownloadError: the download failed (a server silent for
            :data:`DOWNLOAD_TIMEOUT` seconds included) or is corrupt; the message says how
            to pass a copy fetched on another machine (as ``argument``, or in the cache).
    """
    target = hub_cache_path(weights)
    if target.is_file():
        return target
    match = re.search(r"-([a-f0-9]+)\.", target.name)
    previous = socket.getdefaulttimeout()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # torch.hub's downloader takes the process's default socket timeout, none unless set:
        # a server that accepts the connection and never answers would hang it for ever.
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT if previous is None else previous)
        torch.hub.download_url_to_file(
            weights.url, str(target), match.group(1) if match else None, progress=progress
        )
    except (OSError, RuntimeError) as error:
        corrupt = isinstance(error, RuntimeError) and "hash" in str(error)
        reason = "the download is corrupt (" if corrupt else "the download failed ("
        raise WeightsDownloadError(
            f"could not get {argument}={weights!r}: {reason}{type(error).__name__}: {error}) "
            f"from {weights.url}. If this machine is offline, download that file on one that is "
            f"online and either pass its path, {argument}='/path/to/{target.name}', or put it "
            f"at {target}, where torch.hub looks before downloading."
        ) from error
    finally:
        socket.setdefaulttimeout(previous)
    return target


def fetch_state_dict(
    weights: WeightsEnum, argument: str, *, progress: bool = True
) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision weights enum, from torch.hub's cache or the network."""
    target = download_weights(weights, argument, progress=progress)
    state = torch.hub.load_state_dict_from_url(
        weights.url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
    )
    if not isinstance(state, Mapping):
        raise ValueError(f"{target} holds no state dict")
    return state


def uses_zero_batchnorm_eps(weights: WeightsEnum | Path | str) -> bool:
    """Whether these are weights torchvision loads with frozen batch norm ``eps=0``.

    Torchvision's first COCO detectors were trained that way; a local copy of one is
    recognised by its download file name.

    >>> from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights as W
    >>> uses_zero_batchnorm_eps(W.COCO_V1), uses_zero_batchnorm_eps("mine.pth")
    (True, False)
    """
    if isinstance(weights, WeightsEnum):
        return repr(weights) in _LEGACY_EPS_ZERO
    name = Path(weights).name
    return any(
        os.path.basename(urlparse(get_weight(legacy).url).path) == name
        for legacy in _LEGACY_EPS_ZERO
    )
