"""Bad and awkward image inputs each get a clear `ImageError` or the documented treatment."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from stylecodes import images
from stylecodes.images import ImageError, load_image


def _png_bytes(image: Image.Image, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_args)
    return buffer.getvalue()


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width`x`height`; decoding it would inflate to gigabytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_plain_rgb_png_round_trips_from_bytes_and_path(tmp_path):
    original = Image.new("RGB", (20, 10), (10, 200, 30))
    data = _png_bytes(original)
    path = tmp_path / "pic.png"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        loaded = load_image(source)
        assert loaded.mode == "RGB"
        assert loaded.size == (20, 10)
        assert loaded.getpixel((5, 5)) == (10, 200, 30)


def test_empty_bytes_are_refused():
    with pytest.raises(ImageError, match=r"empty"):
        load_image(b"")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty"):
        load_image(path)


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(ImageError, match=r"does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match=r"not a file"):
        load_image(tmp_path)


def test_non_image_file_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is a text file pretending to be a PNG\n")
    with pytest.raises(ImageError, match=r"not an image"):
        load_image(path)


def test_truncated_image_is_refused():
    data = _png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))
    with pytest.raises(ImageError, match=r"damaged or truncated"):
        load_image(data[: len(data) // 2])


def test_corrupt_pixel_data_is_refused():
    data = bytearray(_png_bytes(Image.effect_noise((64, 64), 50).convert("RGB")))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\xff" * 32  # garble the compressed stream (the CRC no longer matches)
    with pytest.raises(ImageError, match=r"^The image is damaged or truncated and could not be decoded \(\w+"):
        load_image(bytes(data))


def test_wrong_source_type_is_refused():
    with pytest.raises(ImageError, match=r"Expected image bytes or a file path"):
        load_image(12345)  # type: ignore[arg-type]


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    # The file is ~100 bytes; a decoder would need 100000x100000x3 bytes. The header check must refuse it
    # without ever calling load(), so make load() fail loudly if it is reached.
    def forbidden_load(self):  # pragma: no cover - reaching this is the failure
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", forbidden_load)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", forbidden_load)
    # Above PIL's own hard limit (PIL refuses it while opening) and between ours and PIL's (our header check).
    for width, height in ((100_000, 100_000), (10_000, 5_000)):
        with pytest.raises(ImageError, match=r"too large"):
            load_image(_png_header_claiming(width, height))


def test_pixel_limit_applies_just_above_the_limit(monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match=r"too large.*limit"):
        load_image(_png_bytes(Image.new("RGB", (11, 10))))
    assert load_image(_png_bytes(Image.new("RGB", (10, 10)))).size == (10, 10)


def test_byte_limit(monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(ImageError, match=r"at most"):
        load_image(_png_bytes(Image.new("RGB", (10, 10))))


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    loaded = load_image(buffer.getvalue())
    assert loaded.mode == "RGB"
    assert loaded.getpixel((8, 8)) == (255, 0, 0)


def test_animated_webp_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((0, 0, 255), (255, 0, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert load_image(buffer.getvalue()).getpixel((8, 8)) == (0, 0, 255)


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (4, 1))
    image.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red: must become white
    image.putpixel((1, 0), (255, 0, 0, 255))  # opaque red stays red
    image.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black: mid grey
    loaded = load_image(_png_bytes(image))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) == (255, 0, 0)
    assert all(126 <= channel <= 128 for channel in loaded.getpixel((2, 0)))


def test_greyscale_alpha_and_palette_transparency_are_composited_on_white():
    grey = Image.new("LA", (2, 2), (0, 0))
    assert load_image(_png_bytes(grey)).getpixel((0, 0)) == (255, 255, 255)

    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    assert load_image(_png_bytes(palette, transparency=1)).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    image = Image.new("I;16", (2, 2), 32768)  # half of the 16-bit range
    loaded = load_image(_png_bytes(image))
    assert loaded.getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_jpeg_becomes_rgb():
    buffer = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(buffer, format="JPEG")
    loaded = load_image(buffer.getvalue())
    assert loaded.mode == "RGB"
    assert all(channel >= 250 for channel in loaded.getpixel((4, 4)))
