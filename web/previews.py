"""Preview images: the worker's WebP grid of a revision, as stored, and a small thumbnail of it.

Thumbnails are made on first request (Pillow, in a worker thread) and kept in a bounded in-memory LRU
keyed by revision id: a revision's preview is written once by the worker and never changes.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict

from PIL import Image

THUMB_WIDTH = 320  # px; home and listing cards show ~240 px
THUMB_QUALITY = 80
CACHE_BYTES = 32 * 1024 * 1024


class ThumbnailCache:
    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[int, bytes] = OrderedDict()

    async def get(self, revision_id: int, load_full) -> bytes | None:
        """The thumbnail of `revision_id`; `load_full()` (awaitable) gives the full WebP when not cached."""
        thumb = self._items.get(revision_id)
        if thumb is not None:
            self._items.move_to_end(revision_id)
            return thumb
        full = await load_full()
        if full is None:
            return None
        thumb = await asyncio.to_thread(make_thumbnail, full)
        self._items[revision_id] = thumb
        self.bytes += len(thumb)
        while self.bytes > self.max_bytes and self._items:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= len(dropped)
        return thumb


def make_thumbnail(webp: bytes) -> bytes:
    """A WebP at most `THUMB_WIDTH` wide, same aspect ratio."""
    with Image.open(io.BytesIO(webp)) as image:
        image = image.convert("RGB")
        if image.width > THUMB_WIDTH:
            image = image.resize((THUMB_WIDTH, max(1, round(image.height * THUMB_WIDTH / image.width))), Image.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="WEBP", quality=THUMB_QUALITY)
        return out.getvalue()
