"""The forge's image-set checks (torch-free): counts, duplicates, non-images, huge images, zip bombs and paths."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from stylecodes.training.forge import imageset
from stylecodes.training.forge.imageset import ImageSetError, collect_images, collect_path, read_zip


def png(seed: int, size: tuple[int, int] = (40, 32)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_uploads_and_a_zip_make_one_set_with_a_warning_below_the_recommended_count():
    uploads = [
        ("a.png", png(1)),
        ("b.png", png(2)),
        ("more.zip", zip_of({f"set/{i}.png": png(10 + i) for i in range(4)})),
    ]
    result = collect_images(uploads)
    assert [image.name for image in result.images] == [
        "a.png",
        "b.png",
        "set/0.png",
        "set/1.png",
        "set/2.png",
        "set/3.png",
    ]
    assert all(image.image.mode == "RGB" for image in result.images)
    assert any("15-20" in warning for warning in result.warnings)
    assert result.fingerprint == collect_images(list(reversed(uploads))).fingerprint  # order does not matter


def test_too_few_images_says_how_many_are_needed():
    with pytest.raises(ImageSetError, match=r"4 distinct image\(s\) were given; at least 5 are needed, and 15-20"):
        collect_images([(f"{i}.png", png(i)) for i in range(4)])


def test_duplicates_by_content_are_used_once_and_can_make_the_set_too_small():
    same = Image.open(io.BytesIO(png(1)))
    as_jpeg_free_copy = io.BytesIO()
    same.save(as_jpeg_free_copy, format="PNG", pnginfo=None, compress_level=1)  # other bytes, same pixels
    uploads = [(f"{i}.png", png(i)) for i in range(5)] + [("copy.png", as_jpeg_free_copy.getvalue())]
    result = collect_images(uploads)
    assert len(result) == 5
    assert any("`copy.png` is the same picture as `1.png`" in warning for warning in result.warnings)
    with pytest.raises(ImageSetError, match=r"1 duplicate\(s\) dropped"):
        collect_images(uploads[1:])


def test_duplicate_names_are_refused():
    with pytest.raises(ImageSetError, match=r"Two files are named `A\.png`"):
        collect_images(
            [("a.png", png(1)), ("b.zip", zip_of({"A.png": png(2)}))] + [(f"{i}.png", png(i)) for i in range(5)]
        )


def test_too_many_images():
    with pytest.raises(ImageSetError, match="41 images were given; at most 40"):
        collect_images([(f"{i}.png", b"x") for i in range(41)])


def test_a_non_image_is_named():
    uploads = [(f"{i}.png", png(i)) for i in range(5)] + [("notes.txt", b"hello")]
    with pytest.raises(ImageSetError, match=r"`notes\.txt`: it is not an image PIL can read"):
        collect_images(uploads)


def test_system_clutter_is_skipped():
    clutter = {"__MACOSX/._0.png": b"junk", "set/.DS_Store": b"junk", "Thumbs.db": b"junk"}
    archive = zip_of({**{f"set/{i}.png": png(i) for i in range(5)}, **clutter})
    assert len(collect_images([("set.zip", archive)])) == 5


def test_a_huge_image_is_refused_before_decoding():
    # A ~100-byte PNG claiming 10000x10000 pixels: refused from its header, no pixel is decoded.
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    uploads = [(f"{i}.png", png(i)) for i in range(5)] + [("huge.png", bomb)]
    with pytest.raises(ImageSetError, match=r"`huge\.png`: it is too large .*100 megapixels"):
        collect_images(uploads)


@pytest.mark.parametrize("name", ["../escape.png", "/etc/evil.png", "C:/evil.png", "set/../../evil.png"])
def test_zip_paths_outside_the_folder_are_refused(name):
    with pytest.raises(ImageSetError, match="a path outside the archive's folder"):
        read_zip(zip_of({"ok.png": png(1), name: png(2)}), "upload.zip")


def test_zip_links_nested_archives_and_encryption_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ImageSetError, match="a link"):
        read_zip(buffer.getvalue(), "upload.zip")
    with pytest.raises(ImageSetError, match="another archive"):
        read_zip(zip_of({"inner.zip": zip_of({"a.png": png(1)})}), "upload.zip")
    encrypted = bytearray(zip_of({"a.png": png(1)}, zipfile.ZIP_STORED))
    encrypted[6] |= 0x1  # the local header's flag bit 0
    central = encrypted.rfind(b"PK\x01\x02")
    encrypted[central + 8] |= 0x1  # and the central directory's
    with pytest.raises(ImageSetError, match="encrypted"):
        read_zip(bytes(encrypted), "upload.zip")


def test_zip_bomb_is_refused_without_inflating_it(monkeypatch):
    monkeypatch.setattr(imageset, "MAX_ZIP_TOTAL_BYTES", 3 * 2**20)  # the real limit is 400 MiB: same logic, less RAM
    bomb = zip_of({f"{i}.png": bytes(2 * 2**20) for i in range(3)})  # 6 MiB of zeros in ~18 KB
    assert len(bomb) < 50_000
    with pytest.raises(ImageSetError, match="unpacks to more than 3 MiB"):
        read_zip(bomb, "bomb.zip")


def test_zip_whose_sizes_lie_is_stopped_at_the_limit(monkeypatch):
    monkeypatch.setattr(imageset, "MAX_IMAGE_BYTES", 2**20)
    data = bytearray(zip_of({"a.png": bytes(3 * 2**20)}))
    # Declare 100 bytes in the central directory: reading stops there and the entry is refused as damaged.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = struct.pack("<I", 100)
    with pytest.raises(ImageSetError, match=r"`a\.png` in `liar\.zip` could not be unpacked \(Bad CRC-32"):
        read_zip(bytes(data), "liar.zip")


def test_not_a_zip_and_missing_paths(tmp_path):
    with pytest.raises(ImageSetError, match="not a readable zip archive"):
        read_zip(b"PK\x03\x04 not really", "upload.zip")
    with pytest.raises(ImageSetError, match="does not exist"):
        collect_path(tmp_path / "missing")
    (tmp_path / "one.png").write_bytes(png(1))
    with pytest.raises(ImageSetError, match=r"not a \.zip"):
        collect_path(tmp_path / "one.png")


def test_folder_and_zip_file_paths(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        (folder / ("sub" if i % 2 else "") / f"{i}.png").write_bytes(png(i))
    (folder / ".hidden").write_text("skipped")
    from_folder = collect_path(folder)
    assert sorted(image.name for image in from_folder.images) == ["0.png", "2.png", "4.png", "sub/1.png", "sub/3.png"]
    archive = tmp_path / "images.zip"
    archive.write_bytes(zip_of({f"{i}.png": png(i) for i in range(5)}))
    assert collect_path(archive).fingerprint == from_folder.fingerprint
