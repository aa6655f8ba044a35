"""The one read path of both datasets: 16-bit images, EXIF orientation, pixel limit, lossy
masks, paths that are not files; against PIL (and torchvision's own EXIF handling)."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps, PngImagePlugin, features

import detkit.data._file_checks as file_checks
import detkit.data._image_files as image_io
from detkit.data import InstanceMaskDataset
from detkit.data._image_headers import parse_header, png_data_crc_error

# -- writers --------------------------------------------------------------------------------


def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA by channel count), which PIL cannot write."""
    array = array if array.ndim == 3 else array[..., None]
    height, width, channels = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def exif_block(orientation: int, *, byte_order: str = "MM", other_tags: int = 0) -> bytes:
    """An APP1 EXIF payload whose first IFD holds ``other_tags`` tags, then Orientation."""
    fmt = ">" if byte_order == "MM" else "<"
    entries = [struct.pack(fmt + "HHIHH", 0x010E + i, 3, 1, 7, 0) for i in range(other_tags)]
    entries.append(struct.pack(fmt + "HHIHH", 0x0112, 3, 1, orientation, 0))
    ifd = struct.pack(fmt + "H", len(entries)) + b"".join(entries) + struct.pack(fmt + "I", 0)
    tiff = byte_order.encode() + struct.pack(fmt + "HI", 42, 8) + ifd
    return b"Exif\x00\x00" + tiff


def pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def read(path: Path, **kwargs) -> torch.Tensor:
    return image_io.decode(path, "sample 0", "image", rgb=True, **kwargs)


@pytest.fixture(params=["torchvision", "pil"])
def decoder(request, monkeypatch):
    """Run a test through both decoders of the read path."""
    if request.param == "pil":
        monkeypatch.setattr(image_io, "_tv_decode_image", None)
    return request.param


# -- 16-bit images ----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_png_images_scale_to_8_bits(tmp_path, decoder, channels):
    rng = np.random.default_rng(channels)
    array = rng.integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    image = read(write_png16(tmp_path / "deep.png", array))
    color = array[..., :3] if channels >= 3 else np.repeat(array[..., :1], 3, axis=2)
    expected = (color >> 8).astype(np.uint8).transpose(2, 0, 1)
    assert image.dtype == torch.uint8
    np.testing.assert_array_equal(image.numpy(), expected)
    if channels == 3:  # PIL reads 16-bit RGB itself (high byte): the same numbers
        np.testing.assert_array_equal(
            expected, np.asarray(Image.open(tmp_path / "deep.png")).transpose(2, 0, 1)
        )


def test_16_bit_gray_tiff_and_dataset_scale_the_full_range(tmp_path):
    ramp = np.linspace(0, 65535, 6 * 9).astype(np.uint16).reshape(6, 9)
    Image.fromarray(ramp).save(tmp_path / "deep.tif")  # "I;16", read by PIL
    assert Image.open(tmp_path / "deep.tif").mode == "I;16"
    expected = np.repeat((ramp >> 8).astype(np.uint8)[None], 3, axis=0)
    np.testing.assert_array_equal(read(tmp_path / "deep.tif").numpy(), expected)
    write_png16(tmp_path / "deep.png", ramp)
    Image.fromarray(np.zeros((6, 9), np.uint8)).save(tmp_path / "mask.png")
    image, _ = InstanceMaskDataset([(tmp_path / "deep.png", tmp_path / "mask.png")])[0]
    np.testing.assert_array_equal(image.numpy(), expected)
    assert int(image.max()) == 255 and int(image.min()) == 0  # not clipped white


def test_16_bit_id_masks_keep_their_ids(tmp_path, decoder):
    ids = np.zeros((4, 6), np.uint16)
    ids[1:3, 1:4] = 40000
    mask = image_io.decode(write_png16(tmp_path / "m.png", ids), "sample 0", "mask", rgb=False)
    np.testing.assert_array_equal(mask[0].numpy(), ids)


# -- EXIF orientation -------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_is_oriented_as_pil_exif_transpose_shows_it(tmp_path, decoder, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels(5, 8)).save(tmp_path / "o.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")).convert("RGB"))
    image = read(tmp_path / "o.png")
    np.testing.assert_array_equal(image.numpy(), expected.transpose(2, 0, 1))
    assert image_io.header_size(tmp_path / "o.png", "sample 0") == expected.shape[:2]
    stored = read(tmp_path / "o.png", exif=False)
    np.testing.assert_array_equal(stored.numpy(), pixels(5, 8).transpose(2, 0, 1))
    assert image_io.header_size(tmp_path / "o.png", "sample 0", exif=False) == (5, 8)


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_is_oriented_once(tmp_path, orientation, compression):
    """Pillow (13 here) orients a TIFF by its Orientation tag itself, on open (size) and load
    (pixels): detkit must not orient it a second time, and exif=False still gives the
    stored pixels. The same image saved as PNG is the reference."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"compression": compression} if compression else {}
    Image.fromarray(pixels(5, 8)).save(tmp_path / "o.tiff", exif=exif, **options)
    Image.fromarray(pixels(5, 8)).save(tmp_path / "o.png", exif=exif)
    expected = read(tmp_path / "o.png")
    np.testing.assert_array_equal(read(tmp_path / "o.tiff").numpy(), expected.numpy())
    assert image_io.header_size(tmp_path / "o.tiff", "sample 0") == tuple(expected.shape[1:])
    stored = read(tmp_path / "o.tiff", exif=False)
    np.testing.assert_array_equal(stored.numpy(), pixels(5, 8).transpose(2, 0, 1))
    assert image_io.header_size(tmp_path / "o.tiff", "sample 0", exif=False) == (5, 8)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("byte_order", ["MM", "II"])
def test_jpeg_is_oriented_as_torchvision_and_pil_show_it(
    tmp_path, decoder, orientation, byte_order
):
    path = tmp_path / "o.jpg"
    Image.fromarray(pixels(6, 10)).save(path, exif=exif_block(orientation, byte_order=byte_order))
    shown = ImageOps.exif_transpose(Image.open(path))
    image = read(path)
    assert tuple(image.shape[1:]) == (shown.height, shown.width)
    assert image_io.header_size(path, "sample 0") == (shown.height, shown.width)
    if decoder == "pil":
        np.testing.assert_array_equal(image.numpy(), np.asarray(shown).transpose(2, 0, 1))
    else:
        from torchvision.io import decode_jpeg, read_file

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            reference = decode_jpeg(read_file(str(path)), apply_exif_orientation=True)
        torch.testing.assert_close(image, reference, rtol=0, atol=0)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    orientation=st.integers(0, 10),
    byte_order=st.sampled_from(["MM", "II"]),
    other_tags=st.integers(0, 4),
    size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    progressive=st.booleans(),
    fmt=st.sampled_from(["JPEG", "PNG"]),
)
def test_header_agrees_with_pil(
    tmp_path, orientation, byte_order, other_tags, size, progressive, fmt
):
    """Our header parser reads the size and orientation PIL reads (invalid values mean 1)."""
    buffer = io.BytesIO()
    block = exif_block(orientation, byte_order=byte_order, other_tags=other_tags)
    image = Image.fromarray(pixels(*size))
    if fmt == "JPEG":
        image.save(buffer, "JPEG", exif=block, progressive=progressive, quality=80)
    else:
        image.save(buffer, "PNG", exif=block[6:])
    data = buffer.getvalue()
    header = parse_header(data)
    opened = Image.open(io.BytesIO(data))
    pil_orientation = opened.getexif().get(0x0112, 1)
    assert (header.format, header.width, header.height) == (fmt, *opened.size)
    assert header.orientation == (pil_orientation if 1 <= pil_orientation <= 8 else 1)
    shown = ImageOps.exif_transpose(opened)
    assert header.size(exif=True) == (shown.height, shown.width)


def test_dataset_aligns_an_oriented_jpeg_with_its_mask(tmp_path):
    """A phone photo stored 10x6 with orientation 6 is shown (and annotated) 6x10."""
    Image.fromarray(pixels(6, 10)).save(tmp_path / "a.jpg", exif=exif_block(6))
    ids = np.zeros((10, 6), np.uint8)  # drawn on the image as shown: 6 wide, 10 high
    ids[1:4, 2:5] = 1
    Image.fromarray(ids).save(tmp_path / "a_mask.png")
    dataset = InstanceMaskDataset([(tmp_path / "a.jpg", tmp_path / "a_mask.png")])
    image, target = dataset[0]
    assert tuple(image.shape) == (3, 10, 6) == (3, *dataset.get_height_and_width(0))
    assert target["boxes"].tolist() == [[2, 1, 5, 4]]
    stored = InstanceMaskDataset(
        [(tmp_path / "a.jpg", tmp_path / "a_mask.png")], apply_exif_orientation=False
    )
    assert stored.get_height_and_width(0) == (6, 10)
    with pytest.raises(ValueError, match=r"is 6x10 \(WxH\) but image .*a\.jpg' is 10x6"):
        stored[0]
    Image.fromarray(ids.T.copy()).save(tmp_path / "a_mask.png")  # drawn on the stored pixels
    with pytest.raises(
        ValueError, match=r"EXIF orientation 6: stored 10x6.*apply_exif_orientation=False"
    ):
        dataset[0]
    assert stored[0][1]["boxes"].tolist() == [[1, 2, 4, 5]]


# -- decompression bombs ----------------------------------------------------------------------


def huge_png(path: Path, width: int, height: int) -> Path:
    """A PNG header announcing ``width x height`` pixels, followed by almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\0" * 64)
    body = (
        struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc + body)
    return path


def huge_jpeg(path: Path, width: int, height: int) -> Path:
    """A real small JPEG whose frame header is edited to announce ``width x height``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels(8, 8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def refuse_to_decode(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(image_io, "_tv_decode_image", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)


@pytest.mark.parametrize("make", [huge_png, huge_jpeg])
def test_pixel_limit_applies_before_decoding(tmp_path, monkeypatch, make):
    path = make(tmp_path / "bomb", 30000, 30000)
    refuse_to_decode(monkeypatch)
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(
        ValueError,
        match=rf"sample 0: image file '.*bomb' is 30000x30000 \(WxH\) = 900,000,000 pixels, "
        rf"over the limit of {limit:,} \(max_image_pixels",
    ):
        read(path, max_pixels=image_io.resolve_max_pixels("pil"))


def test_pixel_limit_of_the_datasets(tmp_path, monkeypatch):
    Image.fromarray(pixels(30, 40)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "a_mask.png")
    Image.fromarray(pixels(30, 40)).save(tmp_path / "a.bmp")  # through PIL
    for image_file in ("a.png", "a.bmp"):
        sample = [(tmp_path / image_file, tmp_path / "a_mask.png")]
        with pytest.raises(
            ValueError, match=rf"sample image_id=0 \(.*\): image file '.*{image_file}' is 40x30"
        ):
            InstanceMaskDataset(sample, max_image_pixels=1000)[0]
        assert InstanceMaskDataset(sample, max_image_pixels=1200)[0][0].shape == (3, 30, 40)
        assert InstanceMaskDataset(sample, max_image_pixels=None)[0][0].shape == (3, 30, 40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the default follows PIL's setting
    with pytest.raises(ValueError, match="over the limit of 1,000"):
        InstanceMaskDataset([(tmp_path / "a.png", tmp_path / "a_mask.png")])[0]


@pytest.mark.parametrize("value", [0, -5, True, 2.5, "big"])
def test_bad_pixel_limit(tmp_path, value):
    with pytest.raises(TypeError, match="max_image_pixels must be a positive int"):
        InstanceMaskDataset([("a.png", "b.png")], check_files=False, max_image_pixels=value)


# -- lossy masks --------------------------------------------------------------------------------


def image_and_mask(tmp_path, ids: np.ndarray, *, mask_format: str, mask_name: str, **options):
    Image.fromarray(pixels(*ids.shape)).save(tmp_path / "a.png")
    Image.fromarray(ids).save(tmp_path / mask_name, mask_format, **options)
    return tmp_path / "a.png", tmp_path / mask_name


def test_jpeg_masks_are_refused_whatever_their_name(tmp_path):
    ids = np.zeros((16, 16), np.uint8)
    ids[4:12, 4:12] = 1
    sample = image_and_mask(tmp_path, ids, mask_format="JPEG", mask_name="a_mask.png")
    with pytest.raises(
        ValueError, match=r"sample image_id=0 \(.*\): mask file '.*a_mask\.png' is JPEG, a lossy"
    ):
        InstanceMaskDataset([sample])[0]
    Image.fromarray(ids).save(tmp_path / "classes.png", "JPEG")
    Image.fromarray(ids).save(sample[1], "PNG")
    dataset = InstanceMaskDataset([sample], semantic_masks=[tmp_path / "classes.png"])
    with pytest.raises(ValueError, match=r"semantic mask file '.*classes\.png' is JPEG, a lossy"):
        dataset[0]


@pytest.mark.skipif(not features.check("webp"), reason="PIL without WebP")
def test_lossy_webp_masks_are_refused_for_their_codec(tmp_path):
    ids = np.zeros((16, 16), np.uint8)
    ids[4:12, 4:12] = 3
    sample = image_and_mask(tmp_path, ids, mask_format="WEBP", mask_name="m.webp", lossless=False)
    with pytest.raises(ValueError, match=r"m\.webp' is WEBP, a lossy format"):
        InstanceMaskDataset([sample])[0]
    # WebP has no gray mode: a lossless one is refused for its colour channels, not its codec.
    sample = image_and_mask(tmp_path, ids, mask_format="WEBP", mask_name="m.webp", lossless=True)
    with pytest.raises(ValueError, match=r"m\.webp' has PIL mode 'RGB'"):
        InstanceMaskDataset([sample])[0]


@pytest.mark.skipif(not features.check("avif"), reason="PIL without AVIF")
def test_avif_masks_are_refused_as_lossy(tmp_path):
    """AVIF (AV1 stills) is lossy, and PIL reads a gray AVIF as mode 'L': a mask saved so at
    the default quality came back with a stray id 3 along the edge of ids 1 and 2."""
    ids = np.zeros((32, 48), np.uint8)
    ids[4:20, 5:30] = 1
    ids[22:30, 20:45] = 2
    sample = image_and_mask(tmp_path, ids, mask_format="AVIF", mask_name="m.avif")
    assert Image.open(sample[1]).mode == "L"
    with pytest.raises(ValueError, match=r"m\.avif' is AVIF, a lossy format"):
        InstanceMaskDataset([sample])[0]
    # As an image, AVIF reads as PIL reads it.
    Image.fromarray(pixels(12, 20)).save(tmp_path / "i.avif")
    expected = np.asarray(Image.open(tmp_path / "i.avif").convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(read(tmp_path / "i.avif").numpy(), expected)


# -- paths that are not image files -----------------------------------------------------------


def test_a_directory_is_called_a_directory_everywhere(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "m.png")
    (tmp_path / "photo.png").mkdir()
    sample = [(tmp_path / "photo.png", tmp_path / "m.png")]
    message = r"sample image_id=0 \(.*\): image path '.*photo\.png' is a directory"
    with pytest.raises(ValueError, match=r"sample 0, image \(is a directory\): .*photo\.png"):
        InstanceMaskDataset(sample)
    dataset = InstanceMaskDataset(sample, check_files=False)
    with pytest.raises(ValueError, match=message):
        dataset.get_height_and_width(0)
    with pytest.raises(ValueError, match=message):
        dataset[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "m.png")
    os.mkfifo(tmp_path / "pipe.png")
    sample = [(tmp_path / "pipe.png", tmp_path / "m.png")]
    with pytest.raises(ValueError, match=r"sample 0, image \(is not a regular file\): .*pipe\.png"):
        InstanceMaskDataset(sample)
    dataset = InstanceMaskDataset(sample, check_files=False)
    for read_it in (lambda: dataset[0], lambda: dataset.get_height_and_width(0)):
        with pytest.raises(
            ValueError, match=r"sample image_id=0 \(.*\): image path '.*pipe\.png' is not a"
        ):
            read_it()


def test_reading_without_readv_gives_the_same_pixels(tmp_path, monkeypatch):
    """Where the OS has no ``readv`` (Windows), a raw file object reads the bytes instead."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "i.jpg")
    Image.fromarray(rng.integers(0, 4, (30, 40), dtype=np.uint8)).save(tmp_path / "m.png")
    dataset = InstanceMaskDataset([(tmp_path / "i.jpg", tmp_path / "m.png")])
    image, target = dataset[0]
    monkeypatch.setattr(image_io, "_readv", None)
    image_again, target_again = dataset[0]
    assert torch.equal(image, image_again)
    assert torch.equal(target["masks"], target_again["masks"])


def test_a_file_that_shrinks_while_read_is_named(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m.png")
    dataset = InstanceMaskDataset([(tmp_path / "i.png", tmp_path / "m.png")])
    monkeypatch.setattr(image_io, "_readinto", lambda fd, view: 0)  # end of file at once
    with pytest.raises(ValueError, match=r"image_id=0 .*: image file '.*i\.png' changed size"):
        dataset[0]


def test_an_empty_image_file_is_named(tmp_path):
    (tmp_path / "i.png").touch()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m.png")
    dataset = InstanceMaskDataset([(tmp_path / "i.png", tmp_path / "m.png")])
    with pytest.raises(ValueError, match=r"image_id=0 .*: cannot decode image file '.*i\.png'"):
        dataset[0]


def jpeg_cut_after_its_frame_header(tail: bytes) -> bytes:
    """A JPEG whose frame header (the size) is whole, then ``tail`` inside its Huffman tables."""
    buffer = io.BytesIO()
    Image.fromarray(pixels(16, 16)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[: data.index(b"\xff\xc4", data.index(b"\xff\xc0")) + 10] + tail


@pytest.mark.parametrize(
    "tail", [b"", b"\x00" * 300 + b"\x12\x34" * 50], ids=["truncated", "garbage"]
)
def test_a_jpeg_broken_after_its_size_is_named(tmp_path, decoder, tail):
    """torchvision fails on it, and PIL's fallback fails while opening (not decoding) it:
    that error too names the sample and the file, rather than PIL's bare 'Truncated File
    Read' (an OSError) or 'no marker found' (a SyntaxError)."""
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_cut_after_its_frame_header(tail))
    assert image_io.header_size(path, "sample 0") == (16, 16)
    with pytest.raises(ValueError, match=r"sample 0: cannot decode image file '.*cut\.jpg'"):
        read(path)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "m.png")
    dataset = InstanceMaskDataset([(path, tmp_path / "m.png")])
    with pytest.raises(ValueError, match=r"image_id=0 .*: cannot decode image file '.*cut\.jpg'"):
        dataset[0]


def test_a_heic_photo_is_named_as_such_with_what_to_do(tmp_path):
    """iPhones save photos as HEIC, which this Pillow cannot read: the error used to say
    'corrupt or truncated?' and show a BytesIO object, not the format and its plugin."""
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "m.png")
    dataset = InstanceMaskDataset([(path, tmp_path / "m.png")])
    for call in (lambda: dataset[0], lambda: dataset.get_height_and_width(0)):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "image_id=0" in message and str(path) in message
        assert "HEIC" in message and "pillow-heif" in message
        assert "BytesIO" not in message and "corrupt or truncated" not in message


def test_find_missing_lists_each_folder_once_and_stats_only_the_misses(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    names = [f"{i:03d}.png" for i in range(40)]
    for name in names:
        (tmp_path / "a" / name).touch()
    (tmp_path / "a" / "dir.png").mkdir()
    paths = [str(tmp_path / "a" / n) for n in names]
    paths += [str(tmp_path / "a" / "dir.png"), str(tmp_path / "a" / "gone.png")]
    stats = []
    real = file_checks.why_unreadable
    monkeypatch.setattr(file_checks, "why_unreadable", lambda p: stats.append(p) or real(p))
    assert file_checks.find_missing(paths) == [(40, "is a directory"), (41, "does not exist")]
    assert stats == paths[40:]
    # A listing that misses names (case-insensitive disks, Unicode forms) costs a stat, no error.
    monkeypatch.setattr(file_checks, "files_in", lambda folder: set())
    assert file_checks.find_missing(paths) == [(40, "is a directory"), (41, "does not exist")]


def test_header_behind_large_segments_is_found(tmp_path):
    """A JPEG whose frame header follows 180 KB of other segments (EXIF thumbnails, ICC
    profiles) is sized from its header all the same, as PIL sizes it."""
    buffer = io.BytesIO()
    Image.fromarray(pixels(7, 9)).save(buffer, "JPEG", exif=exif_block(8))
    data = buffer.getvalue()
    segment = b"\xff\xe2" + struct.pack(">H", 60_002) + bytes(60_000)  # an APP2 of 60 KB
    path = tmp_path / "big_header.jpg"
    path.write_bytes(data[:2] + segment * 3 + data[2:])
    assert Image.open(path).size == (9, 7)
    assert image_io.header_size(path, "sample 0") == (9, 7)  # orientation 8 swaps the sides
    assert image_io.header_size(path, "sample 0", exif=False) == (7, 9)
    assert tuple(read(path).shape) == (3, 9, 7)
    path.write_bytes(data[:2] + segment * 3)  # cut before the frame header
    with pytest.raises(ValueError, match=r"sample 0: cannot read the header of image file"):
        image_io.header_size(path, "sample 0")


def break_idat_crc(path: Path) -> None:
    """Flip a byte inside a PNG's image data and keep its stale CRC, as bit rot does."""
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 40] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("role", ["image", "mask"])
def test_png_with_damaged_image_data_is_refused_before_decoding(tmp_path, role):
    """torchvision 0.29's PNG decoder crashes the process (a segmentation fault naming no
    file) on image data that does not inflate: the read checks the image data's CRCs first.
    Were the check gone, this test would take pytest down with it."""
    image, mask = tmp_path / "a.png", tmp_path / "a_mask.png"
    Image.fromarray(pixels(40, 56)).save(image)
    ids = np.zeros((40, 56), dtype=np.uint8)
    ids[5:30, 10:50] = 1
    Image.fromarray(ids).save(mask)
    broken = image if role == "image" else mask
    break_idat_crc(broken)
    dataset = InstanceMaskDataset([(image, mask)])
    with pytest.raises(ValueError) as error:
        dataset[0]
    assert str(error.value) == (
        f"sample image_id=0 ('{image}'): {role} file '{broken}' is corrupt: CRC error in its "
        "image data (chunk IDAT at byte 33); replace it (decoding it would crash the "
        "process: torchvision's PNG decoder)"
    )


def test_png_with_a_damaged_text_chunk_still_reads(tmp_path):
    """Only the image data's CRCs are checked: a damaged text chunk, which decoders skip,
    does not make a readable image an error."""
    path = tmp_path / "a.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "a labelling tool")
    Image.fromarray(pixels(12, 16)).save(path, pnginfo=info)
    data = bytearray(path.read_bytes())
    data[data.index(b"labelling")] ^= 0xFF
    path.write_bytes(bytes(data))
    assert png_data_crc_error(memoryview(data)) is None
    assert read(path).permute(1, 2, 0).numpy().tolist() == pixels(12, 16).tolist()
