"""The images a personal style is forged from: collected from files, uploads or one zip, checked, de-duplicated.

Torch-free (PIL only), so the bot can check an upload before it queues a training job and say exactly what is wrong.
Every image goes through `stylecodes.images.load_image` (size limit, decompression-bomb check before decoding, first
frame of animations, transparency on white). On top of that:

- count: at least `MIN_IMAGES` (StyleForge uses 15-20; fewer is allowed with a warning), at most `MAX_IMAGES`;
- duplicates: two images with the same pixels (whatever their file names or containers) are kept once, with a
  warning naming both; two entries with the same name are refused (the user would not know which one we used);
- zips are read in memory, never extracted: an entry outside the archive's folder (`../x`, `/x`, `C:\\x`), a link,
  an encrypted entry, a nested archive, too many entries, or more than `MAX_ZIP_TOTAL_BYTES` of content (declared
  or actual) are refused before anything is decompressed past the limit, so a zip bomb costs nothing.

System clutter (`__MACOSX/`, `.DS_Store`, `Thumbs.db`, dot files) is skipped silently; any other file must be an
image, and a non-image is refused by name.
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from stylecodes.images import MAX_IMAGE_BYTES, ImageError, load_image

MIN_IMAGES = 5  # fewer gives the LoRA nothing to generalise from: it copies the pictures
RECOMMENDED_IMAGES = (15, 20)  # StyleForge's StyleRef sets (Park et al., 2024)
MAX_IMAGES = 40  # more adds training time for little gain; the upload limit
MAX_ZIP_BYTES = 200 * 1024 * 1024  # the archive itself
MAX_ZIP_ENTRIES = 200  # entries of any kind, skipped ones included
MAX_ZIP_TOTAL_BYTES = 400 * 1024 * 1024  # all content once decompressed: 40 images of 10 MB each
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz")
_IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


class ImageSetError(ValueError):
    """The image set cannot be used. The message says what was wrong and how to fix it; safe to show users."""


@dataclass(frozen=True)
class ForgeImage:
    name: str  # as the user named it (file name, or path inside the zip)
    image: Image.Image  # RGB
    sha256: str  # of the decoded pixels and size: the same picture in another container is a duplicate


@dataclass
class ImageSet:
    images: list[ForgeImage]
    warnings: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """One hash for the whole set, independent of order and names: what a checkpoint is tied to."""
        return hashlib.sha256("\n".join(sorted(image.sha256 for image in self.images)).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.images)


def collect_images(
    sources: Sequence[tuple[str, bytes]], *, min_images: int = MIN_IMAGES, max_images: int = MAX_IMAGES
) -> ImageSet:
    """Check named uploads (`(file name, bytes)`; a `.zip` among them is opened) and return the usable set."""
    entries: list[tuple[str, bytes]] = []
    for name, data in sources:
        if name.lower().endswith(".zip"):
            entries.extend(read_zip(data, name))
        elif not _is_ignored(name):
            entries.append((name, data))
    return _build_set(entries, min_images=min_images, max_images=max_images)


def collect_path(path: str | Path, *, min_images: int = MIN_IMAGES, max_images: int = MAX_IMAGES) -> ImageSet:
    """The image set in a folder (recursively, in name order) or in one `.zip` file."""
    path = Path(path)
    if not path.exists():
        raise ImageSetError(f"`{path}` does not exist. Give a folder of images or a .zip of them.")
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise ImageSetError(f"`{path}` is a file but not a .zip. Give a folder of images or a .zip of them.")
        if path.stat().st_size > MAX_ZIP_BYTES:
            raise ImageSetError(f"`{path}` is larger than {MAX_ZIP_BYTES // 2**20} MiB. Send fewer or smaller images.")
        return _build_set(read_zip(path.read_bytes(), path.name), min_images=min_images, max_images=max_images)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _is_ignored(p.relative_to(path).as_posix()))
    if len(files) > MAX_ZIP_ENTRIES:
        raise ImageSetError(f"`{path}` holds {len(files)} files; give a folder with at most {max_images} images.")
    entries = []
    for file in files:
        size = file.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageSetError(
                f"`{file}` is {size / 2**20:.0f} MiB; images may be at most {MAX_IMAGE_BYTES // 2**20} MiB."
            )
        entries.append((file.relative_to(path).as_posix(), file.read_bytes()))
    return _build_set(entries, min_images=min_images, max_images=max_images)


def read_zip(data: bytes, archive_name: str = "the zip") -> list[tuple[str, bytes]]:
    """`(path inside the archive, bytes)` for every file worth reading, after the safety checks in the module doc."""
    if len(data) > MAX_ZIP_BYTES:
        raise ImageSetError(
            f"`{archive_name}` is larger than {MAX_ZIP_BYTES // 2**20} MiB. Send fewer or smaller images."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ImageSetError(f"`{archive_name}` is not a readable zip archive ({exc}).") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise ImageSetError(
                f"`{archive_name}` has {len(infos)} entries; at most {MAX_ZIP_ENTRIES}. Zip only the images."
            )
        wanted = [info for info in infos if not info.is_dir() and not _is_ignored(info.filename)]
        for info in wanted:
            _check_entry(info, archive_name)
        declared = sum(info.file_size for info in wanted)
        if declared > MAX_ZIP_TOTAL_BYTES:
            raise _too_much_content(archive_name)
        entries, total = [], 0
        for info in wanted:
            content = _read_entry(archive, info, archive_name, budget=MAX_ZIP_TOTAL_BYTES - total)
            total += len(content)
            entries.append((info.filename, content))
        return entries


def _check_entry(info: zipfile.ZipInfo, archive_name: str) -> None:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and path.parts[0].endswith(":")):
        raise ImageSetError(
            f"`{archive_name}` contains `{name}`, a path outside the archive's folder. Zip the images themselves, "
            "with plain relative names."
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ImageSetError(f"`{archive_name}` contains `{name}`, a link. Zip the image files themselves.")
    if info.flag_bits & 0x1:
        raise ImageSetError(f"`{archive_name}` contains `{name}`, which is encrypted. Send an unencrypted zip.")
    if name.lower().endswith(ARCHIVE_SUFFIXES):
        raise ImageSetError(f"`{archive_name}` contains another archive, `{name}`. Put all images in one zip.")
    if info.file_size > MAX_IMAGE_BYTES:
        raise ImageSetError(
            f"`{name}` in `{archive_name}` is {info.file_size / 2**20:.0f} MiB once unpacked; images may be at most "
            f"{MAX_IMAGE_BYTES // 2**20} MiB."
        )


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, archive_name: str, *, budget: int) -> bytes:
    """The entry's bytes, reading at most `budget` (and one image's limit): declared sizes can lie."""
    limit = min(budget, MAX_IMAGE_BYTES)
    try:
        with archive.open(info) as stream:
            content = stream.read(limit + 1)
    except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError, RuntimeError) as exc:
        raise ImageSetError(f"`{info.filename}` in `{archive_name}` could not be unpacked ({exc}).") from None
    if len(content) > limit:
        if limit < MAX_IMAGE_BYTES:
            raise _too_much_content(archive_name)
        raise ImageSetError(
            f"`{info.filename}` in `{archive_name}` is larger than {MAX_IMAGE_BYTES // 2**20} MiB once unpacked."
        )
    return content


def _too_much_content(archive_name: str) -> ImageSetError:
    return ImageSetError(
        f"`{archive_name}` unpacks to more than {MAX_ZIP_TOTAL_BYTES // 2**20} MiB. Send at most {MAX_IMAGES} "
        "ordinary-sized images."
    )


def _build_set(entries: Iterable[tuple[str, bytes]], *, min_images: int, max_images: int) -> ImageSet:
    entries = list(entries)
    seen_names: dict[str, str] = {}
    for name, _ in entries:
        key = name.replace("\\", "/").lower()
        if key in seen_names:
            raise ImageSetError(
                f"Two files are named `{name}`. Rename one of them so each image has its own name, then try again."
            )
        seen_names[key] = name
    if len(entries) > max_images:
        raise ImageSetError(f"{len(entries)} images were given; at most {max_images}. Pick your best {max_images}.")
    images: list[ForgeImage] = []
    warnings: list[str] = []
    by_hash: dict[str, str] = {}
    for name, data in entries:
        try:
            image = load_image(data)
        except ImageError as exc:
            raise ImageSetError(f"`{name}`: {_without_subject(str(exc))}") from None
        digest = pixel_sha256(image)
        if digest in by_hash:
            warnings.append(f"`{name}` is the same picture as `{by_hash[digest]}`; it was used once.")
            continue
        by_hash[digest] = name
        images.append(ForgeImage(name=name, image=image, sha256=digest))
    if len(images) < min_images:
        duplicates = len(entries) - len(images)
        note = f" ({duplicates} duplicate(s) dropped)" if duplicates else ""
        raise ImageSetError(
            f"{len(images)} distinct image(s) were given{note}; at least {min_images} are needed, and "
            f"{RECOMMENDED_IMAGES[0]}-{RECOMMENDED_IMAGES[1]} work best. Add more pictures in the style."
        )
    if len(images) < RECOMMENDED_IMAGES[0]:
        warnings.append(
            f"Only {len(images)} images: {RECOMMENDED_IMAGES[0]}-{RECOMMENDED_IMAGES[1]} varied pictures in the style "
            "give a style that generalises better."
        )
    return ImageSet(images, warnings)


def pixel_sha256(image: Image.Image) -> str:
    """sha256 of an RGB image's size and pixels: equal for the same picture saved as PNG or with other metadata."""
    digest = hashlib.sha256(f"{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _is_ignored(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts:
        return True
    return parts[0] == "__MACOSX" or parts[-1].lower() in _IGNORED_NAMES or parts[-1].startswith(".")


def _without_subject(message: str) -> str:
    """load_image's messages start with "The image ..."; after the file name, "It ..." reads better."""
    return message.replace("The image ", "it ", 1) if message.startswith("The image ") else message
