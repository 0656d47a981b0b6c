"""Loading user images safely: one RGB picture out of whatever bytes a user sent, or a clear `ImageError`.

PIL only (no torch), so the bot can validate an upload before it queues a job. Rules, in order:

1. the source must exist and be non-empty, and at most `MAX_IMAGE_BYTES` long;
2. the header is read lazily and the pixel count checked *before* any pixel is decoded, so a
   decompression bomb (a few KB that inflate to gigabytes) is refused without being decoded;
3. animations (GIF, APNG, WebP) use their first frame;
4. transparency (alpha channels, palette transparency) is composited on white, as a user would see
   the picture on a page, instead of PIL's default of dropping alpha (which reveals hidden colours).

EXIF orientation is deliberately not applied: the published StyleCodes tool did not apply it either, and
the same file must give the same stylecode as that tool.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# 40 megapixels: above any camera or screenshot a user would share (8000x5000), far below what a
# decompression bomb inflates to. The encoder resizes everything to 512x512 anyway.
MAX_IMAGE_PIXELS = 40_000_000
# Discord's largest upload for boosted servers is 100 MiB; anything larger is not an image for us.
MAX_IMAGE_BYTES = 100 * 1024 * 1024

_SUPPORTED_HINT = "Send a PNG, JPEG, WebP or GIF picture."


class ImageError(ValueError):
    """An image could not be used. The message says why and is safe to show to users."""


def load_image(source: bytes | bytearray | str | Path) -> Image.Image:
    """Decode `source` (raw bytes or a file path) into an RGB image. Raises `ImageError` for anything unusable."""
    data, name = _read_source(source)
    with warnings.catch_warnings():
        # PIL warns (instead of raising) between its own limit and twice it; our limit is lower and raises.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # lazy: reads the header only
        except Image.DecompressionBombError:
            raise _too_large(name, None) from None
        except UnidentifiedImageError:
            raise ImageError(f"{name} is not an image PIL can read. {_SUPPORTED_HINT}") from None
        except Exception as exc:  # PIL's format plugins raise many types for malformed headers
            raise ImageError(f"{name} could not be read as an image ({_describe(exc)}). {_SUPPORTED_HINT}") from None
        with image:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageError(f"{name} has no pixels ({width}x{height}).")
            if width * height > MAX_IMAGE_PIXELS:
                raise _too_large(name, (width, height))
            try:
                image.seek(0)  # first frame of an animation (a no-op for still images)
                image.load()
                return to_rgb(image)
            except Exception as exc:  # truncated or corrupt pixel data surfaces only when decoding
                raise ImageError(
                    f"{name} is damaged or truncated and could not be decoded ({_describe(exc)})."
                ) from None


def _read_source(source: bytes | bytearray | str | Path) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray):
        data, name = bytes(source), "The image"
    elif isinstance(source, str | Path):
        path = Path(source)
        name = f"`{path}`"
        if not path.exists():
            raise ImageError(f"{name} does not exist.")
        if not path.is_file():
            raise ImageError(f"{name} is not a file.")
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"{name} is {size / 2**20:.0f} MiB; images may be at most {MAX_IMAGE_BYTES // 2**20} MiB.")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{name} could not be read ({exc.strerror or exc}).") from None
    else:
        raise ImageError(f"Expected image bytes or a file path, got {type(source).__name__}.")
    if not data:
        raise ImageError(f"{name} is empty (0 bytes). {_SUPPORTED_HINT}")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(
            f"{name} is {len(data) / 2**20:.0f} MiB; images may be at most {MAX_IMAGE_BYTES // 2**20} MiB."
        )
    return data, name


def to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB copy of `image`: transparency composited on white (rule 4), 16/32-bit greyscale scaled to 8 bits.

    The one RGB rule, for decoded files and for PIL images handed straight to the encoder alike.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of letting convert() clip everything above 255.
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def png_bytes(image: Image.Image, max_side: int | None = None) -> bytes:
    """`image` as PNG bytes, shrunk to fit `max_side` when given (results, previews, thumbnails)."""
    if max_side is not None:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)  # optimize costs seconds at 512 px for a few percent
    return buffer.getvalue()


def _too_large(name: str, size: tuple[int, int] | None) -> ImageError:
    dimensions = f" ({size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} megapixels)" if size else ""
    return ImageError(
        f"{name} is too large{dimensions}; the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels. "
        "Send a smaller copy: the style is read from a 512x512 version anyway."
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
