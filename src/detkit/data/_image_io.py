"""Image and mask file reading shared by the datasets: fast decoding, header sizes, errors.

Every function takes ``where`` (``"sample 3"``, ``"image id 17"``) so that its errors name the
sample as its dataset does, and ``what`` (``"image"``, ``"mask"``) to name the file's role.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

try:
    from torchvision.io import ImageReadMode as _ImageReadMode
    from torchvision.io import decode_image as _tv_decode_image
    from torchvision.io import read_file as _tv_read_file
except ImportError:  # torchvision without image decoding: PIL does all the work
    _tv_decode_image = None

# Mask modes that hold one integer per pixel. "1" is a binary mask (one instance).
ID_MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_error(where: str, path: Path, what: str, exc: BaseException) -> OSError | ValueError:
    """The error to raise when ``path`` cannot be read, naming the sample and the file."""
    if isinstance(exc, FileNotFoundError) or not path.exists():
        return FileNotFoundError(f"{where}: {what} file not found: '{path}'")
    if path.is_dir():
        return ValueError(f"{where}: {what} path '{path}' is a directory, not a file")
    if isinstance(exc, PermissionError) or not os.access(path, os.R_OK):
        return PermissionError(f"{where}: cannot read {what} file '{path}' (permission denied)")
    return ValueError(f"{where}: cannot decode {what} file '{path}' (corrupt or truncated?): {exc}")


def decode(path: Path, where: str, what: str, *, rgb: bool) -> torch.Tensor:
    """Decode ``path`` to a uint8/uint16 ``Tensor[C, H, W]`` (RGB uint8 when ``rgb``).

    torchvision's decoder writes straight into a tensor, about 1 ms an image faster than
    PIL, whose pixels reach numpy only through ``tobytes()`` copies; PIL takes over for
    whatever torchvision cannot read (other formats and modes, or a future torchvision
    without ``torchvision.io`` decoding) and reports corrupt files. Palette PNGs of fewer
    than 8 bits a pixel (what ``Image.save(..., optimize=True)`` writes for masks with few
    ids) go to PIL too: torchvision leaves their rows unpacked, returning garbage ids.
    Without ``rgb``, a file whose PIL mode is not one of :data:`ID_MASK_MODES` is refused.
    """
    if _tv_decode_image is not None:
        try:
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its decoders in favour of TorchCodec.
                warnings.simplefilter("ignore", DeprecationWarning)
                data = _tv_read_file(str(path))
                if rgb or not _is_low_bit_palette_png(data):
                    tensor = _tv_decode_image(
                        data, mode=_ImageReadMode.RGB if rgb else _ImageReadMode.UNCHANGED
                    )
                    if tensor.dtype == torch.uint8 or (not rgb and tensor.shape[0] == 1):
                        return tensor
        except RuntimeError:
            pass
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise read_error(where, path, what, exc) from exc
    if rgb:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    if image.mode not in ID_MASK_MODES:
        raise ValueError(
            f"{where}: {what} file '{path}' has PIL mode {image.mode!r}; an id mask must "
            f"have one integer channel (modes {', '.join(ID_MASK_MODES)})"
        )
    array = np.array(image)
    return torch.from_numpy(array.view(np.uint8) if array.dtype == np.bool_ else array)[None]


def _is_low_bit_palette_png(data: torch.Tensor) -> bool:
    """Whether the file bytes ``data`` are a palette PNG with 1, 2 or 4 bits a pixel."""
    head = data[:26].numpy().tobytes()
    return (
        len(head) == 26
        and head[:8] == _PNG_SIGNATURE
        and head[12:16] == b"IHDR"
        and head[24] < 8  # bit depth
        and head[25] == 3  # colour type: palette
    )


def header_size(path: Path, where: str) -> tuple[int, int]:
    """``(height, width)`` from an image file's header: 24 bytes for a PNG, else PIL's parser."""
    try:
        with open(path, "rb") as file:
            head = file.read(24)
        if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
            return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: image file not found: '{path}'") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{where}: cannot read the header of image '{path}': {exc}") from exc
    return height, width
