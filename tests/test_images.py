"""Decoding and checking uploads: every colour mode to RGB, upright, first frame, bounded."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import images
from errors import APIError
from images import decode_image, to_rgb
from tests.conftest import image_bytes
from tests.hardening.corpus import animated, encode_oriented, gif_bomb, palette_with_transparency, png_bomb
from tests.service import REPO

LIMIT = 100_000_000


def decode(data: bytes, max_pixels: int = LIMIT) -> Image.Image:
    return decode_image(data, max_pixels).image


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"),
     ("P", "GIF"), ("I;16", "PNG"), ("RGB", "WEBP"), ("RGBA", "WEBP"), ("RGB", "BMP"), ("RGB", "TIFF"), ("F", "TIFF")],
)
def test_every_common_mode_and_format_decodes_to_rgb(mode: str, fmt: str) -> None:
    decoded = decode_image(image_bytes(mode, (40, 30), fmt), LIMIT)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (40, 30)
    assert decoded.format == fmt


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white() -> None:
    grey = decode(image_bytes("I;16", (8, 8), "PNG", color=32768))
    assert grey.getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.parametrize(("value", "grey"), [(0.5, 128), (1.0, 255), (128.0, 128), (300.0, 255)])
def test_floating_point_grey_is_read_as_0_to_1_when_it_stays_within_it(value: float, grey: int) -> None:
    assert decode(image_bytes("F", (8, 8), "TIFF", color=value)).getpixel((0, 0)) == (grey, grey, grey)


def test_transparent_pixels_become_white_not_black() -> None:
    assert decode(image_bytes("RGBA", (8, 8), "PNG", color=(0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    half = decode(image_bytes("LA", (8, 8), "PNG", color=(0, 128)))
    assert half.getpixel((0, 0)) == (127, 127, 127)


def test_palette_transparency_is_composited_over_white() -> None:
    assert decode(palette_with_transparency()).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_is_converted_to_matching_rgb() -> None:
    red = to_rgb(Image.new("CMYK", (4, 4), (0, 255, 255, 0)))
    assert red.getpixel((0, 0)) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    # Stored 60 wide and 20 high, left half red, with "rotate 90 CW to display" (orientation 6).
    stored = Image.new("RGB", (60, 20), "blue")
    stored.paste((255, 0, 0), (0, 0, 30, 20))
    decoded = decode_image(encode_oriented(stored, "JPEG", 6), LIMIT)
    assert (decoded.width, decoded.height) == (20, 60) == decoded.image.size
    top = decoded.image.getpixel((10, 5))
    assert isinstance(top, tuple)
    assert top[0] > 200 and top[2] < 60  # red, the stored left half, is now on top


def test_animated_images_use_the_first_frame() -> None:
    for fmt in ("GIF", "WEBP", "PNG"):
        first = decode(animated(fmt)).getpixel((8, 8))  # red, green, blue frames: red first
        assert isinstance(first, tuple), fmt
        assert first[0] > 200 and first[1] < 60, fmt


def png_header_only(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR (8-bit RGB), then an IDAT chunk announcing 1000 bytes and holding none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + struct.pack(">I", 1000) + b"IDAT"


def test_pixel_limit_is_checked_before_decoding() -> None:
    # 12 megapixels announced (36 MB once decoded), not one pixel sent: only a check of the header
    # can answer 413. Pillow needs the IDAT chunk's start to open a PNG; its data is what is missing.
    header_only = png_header_only(4000, 3000)
    with pytest.raises(APIError) as error:
        decode_image(header_only, max_pixels=10_000_000)
    assert (error.value.status, error.value.code) == (413, "image_too_large")
    assert "4000x3000" in error.value.message
    # Under a higher limit the same bytes reach the decoder, which fails differently.
    with pytest.raises(APIError) as error:
        decode_image(header_only, max_pixels=LIMIT)
    assert (error.value.status, error.value.code) == (415, "invalid_image")


def test_decompression_bomb_is_refused_from_its_header() -> None:
    # A PNG declaring 30000x30000 pixels (900 million) in a file of a few kilobytes.
    bomb = png_bomb()
    assert len(bomb) < 200_000
    with pytest.raises(APIError) as error:
        decode_image(bomb, LIMIT)
    assert (error.value.status, error.value.code) == (413, "image_too_large")
    assert "900,000,000 pixels" in error.value.message  # the answer says how large, however large


def test_pillows_limit_holds_for_every_decode_under_way_in_other_threads_and_is_put_back_after() -> None:
    # A batch decodes in several threads: one ending must not drop the limit of one still going.
    before = Image.MAX_IMAGE_PIXELS
    first, second = images._pillow_limit(300_000_000), images._pillow_limit(200_000_000)
    first.__enter__()
    second.__enter__()
    try:
        first.__exit__(None, None, None)
        assert Image.MAX_IMAGE_PIXELS == 200_000_000  # not Pillow's default while the second decodes
    finally:
        second.__exit__(None, None, None)
    assert before == Image.MAX_IMAGE_PIXELS


def test_a_tiny_gif_announcing_a_huge_frame_is_refused_without_allocating_it() -> None:
    # Pillow allocates a GIF's first frame while opening it, before our own check can run: only
    # Pillow's limit, kept on, stops a 43-byte upload from taking 4 GB of a worker's memory.
    script = (
        "import sys; from images import decode_image; from errors import APIError; from scripts.procs import peak_rss_bytes\n"
        "try:\n    decode_image(sys.stdin.buffer.read(), 100_000_000)\n"
        "except APIError as error:\n    print(error.status, error.code)\n"
        "print(peak_rss_bytes() // 2**20)"
    )
    result = subprocess.run([sys.executable, "-c", script], input=gif_bomb(), capture_output=True, cwd=REPO, timeout=120, check=True)
    answer, peak_mb = result.stdout.decode().split("\n")[:2]
    assert answer == "413 image_too_large"
    assert int(peak_mb) < 300, f"{peak_mb} MB at its peak"


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_file"),
        (b"hello, this is text", 415, "invalid_image"),
        (b"%PDF-1.4\n1 0 obj\n", 415, "unsupported_format"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', 415, "unsupported_format"),
        (b'\xef\xbb\xbf<svg xmlns="http://www.w3.org/2000/svg"/>', 415, "unsupported_format"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", 415, "unsupported_format"),
        (image_bytes("RGB", (400, 300), "JPEG")[:300], 415, "invalid_image"),
        (image_bytes("RGB", (2000, 10), "PNG"), 415, "unsupported_dimensions"),
        # An RGB TIFF declaring 32 bits per sample: valid TIFF, but no mode of Pillow's fits it.
        (image_bytes("RGB", (8, 8), "TIFF").replace(b"\x08\x00" * 3, b"\x20\x00" * 3, 1), 415, "unsupported_format"),
    ],
    ids=["empty", "text", "pdf", "svg", "svg-with-bom", "heic", "truncated-jpeg", "strip", "tiff-32-bit-rgb"],
)
def test_bad_uploads_are_refused_with_a_clear_code(data: bytes, status: int, code: str) -> None:
    with pytest.raises(APIError) as error:
        decode_image(data, LIMIT)
    assert (error.value.status, error.value.code) == (status, code)


def _with_bad_header_checksum(png: bytes) -> bytes:
    damaged = bytearray(png)
    damaged[29] ^= 0xFF  # the IHDR chunk's CRC: Pillow cannot even open it
    return bytes(damaged)


@pytest.mark.parametrize(
    ("data", "name"),
    [(_with_bad_header_checksum(image_bytes("RGB", (8, 8), "PNG")), "PNG"), (image_bytes("RGB", (8, 8), "JPEG")[:20], "JPEG")],
    ids=["png-bad-checksum", "jpeg-cut-short"],
)
def test_a_damaged_file_of_a_supported_format_is_called_damaged_not_no_image(data: bytes, name: str) -> None:
    with pytest.raises(APIError) as error:
        decode_image(data, LIMIT)
    assert (error.value.status, error.value.code) == (415, "invalid_image")
    assert error.value.message == f"The {name} image could not be read: it is truncated or corrupt."


def test_tiny_images_are_classifiable() -> None:
    assert decode(image_bytes("RGB", (1, 1), "PNG")).size == (1, 1)


def test_large_jpegs_decode_at_reduced_scale_but_report_their_real_size() -> None:
    big = image_bytes("RGB", (2000, 1500), "JPEG")
    decoded = decode_image(big, LIMIT, min_side=512)
    assert decoded.image.size == (1000, 750)  # libjpeg's 1/2 scale: the largest cut keeping >= 512
    assert (decoded.width, decoded.height) == (2000, 1500)


def test_reduced_scale_never_goes_below_the_side_asked_for_nor_touches_other_formats() -> None:
    assert decode_image(image_bytes("RGB", (900, 700), "JPEG"), LIMIT, min_side=512).image.size == (900, 700)
    assert decode_image(image_bytes("RGB", (2000, 1500), "PNG"), LIMIT, min_side=512).image.size == (2000, 1500)


def test_pictures_converted_in_strips_come_out_whole_and_scaled_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    # Strips of 3 rows of a 7-wide picture: every strip's place, and one scale for all of them.
    monkeypatch.setattr(images, "STRIP_PIXELS", 21)
    rows = np.arange(7 * 10, dtype=np.uint16).reshape(10, 7)
    sixteen = Image.fromarray(rows * 900)  # 0..62100, I;16
    assert np.array_equal(np.asarray(to_rgb(sixteen))[..., 0], np.round(rows * 900 / 257).astype(np.uint8))
    floats = np.full((10, 7), 0.5, dtype=np.float32)
    floats[-1, -1] = 2.0  # the only value over 1, in the last strip: the picture is 0..255, not 0..1
    assert np.asarray(to_rgb(Image.fromarray(floats)))[0, 0, 0] == 0  # 0.5 of 255, not 0.5 x 255
    rgba = np.zeros((10, 7, 4), dtype=np.uint8)
    rgba[..., 0] = rows % 256
    rgba[..., 3] = 255
    rgba[5, 3, 3] = 0  # one transparent pixel, in the middle strip
    composited = np.asarray(to_rgb(Image.fromarray(rgba)))
    assert np.array_equal(composited[..., 0][rgba[..., 3] == 255], (rows % 256)[rgba[..., 3] == 255])
    assert tuple(composited[5, 3]) == (255, 255, 255)


# Measured in a fresh process: Linux's peak-RSS counter, reset once the picture is made.
_PEAK_DURING_TO_RGB = """
import os, sys
from PIL import Image
from images import to_rgb
from scripts.procs import peak_rss_bytes, rss_bytes
mode, colour = sys.argv[1], eval(sys.argv[2])
picture = Image.new(mode, (4000, 4000), colour)
if mode == "P":
    picture.info["transparency"] = 0
open("/proc/self/clear_refs", "w").write("5")
before = rss_bytes(os.getpid())
to_rgb(picture)
print((peak_rss_bytes() - before) // 1024)
"""


@pytest.mark.parametrize(("mode", "colour"), [("I;16", "40000"), ("F", "0.5"), ("RGBA", "(9, 9, 9, 128)"), ("P", "0")])
def test_converting_a_large_picture_to_rgb_takes_little_more_than_the_rgb_picture(mode: str, colour: str) -> None:
    # 100-megapixel uploads of these modes took 2.4-3.2 GB per worker in float64 and whole-image
    # RGBA copies; the RGB result alone is 4 bytes a pixel (Pillow pads RGB to 32 bits).
    pixels = 4000 * 4000
    result = subprocess.run([sys.executable, "-c", _PEAK_DURING_TO_RGB, mode, colour], capture_output=True, text=True, check=True, cwd=REPO)
    growth_kib = int(result.stdout)
    assert growth_kib * 1024 < 5 * pixels, f"{growth_kib / 1024:.0f} MiB for {pixels:,} pixels"
