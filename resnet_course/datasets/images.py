"""Datasets stored as image files: ``train/<class>/*`` and ``test/<class>/*`` folders, or a
zip of them (CIFAR-10's and FER-2013's image forms).

The zip is read into memory and opened with :mod:`zipfile` (which checks every member's
CRC). JPEGs of the expected size and colour space are decoded by simplejpeg (libjpeg-turbo,
called once per image from C: a fifth of Pillow's time on these tiny images, and the same
pixels); everything else (PNGs, other sizes or colour spaces, damaged files) by Pillow,
which also names what is wrong. Large datasets are decoded in chunks by a pool of forked
worker processes (:class:`concurrent.futures.ProcessPoolExecutor`) that share the
parent's open zip.
"""

from __future__ import annotations

import io
import operator
import os
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

try:
    import simplejpeg
except ImportError:  # Pillow decodes the same pixels, about five times more slowly
    simplejpeg = None

from resnet_course.datasets.core import (
    CLASS_NAMES,
    DISPLAY_NAMES,
    IMAGE_SHAPES,
    DatasetError,
    chunks,
    first_line,
    map_in_processes,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Below this many images, starting worker processes costs more than it saves.
PARALLEL_MIN_IMAGES = 2048

# split -> [(file name, label, reference)], where a reference is a file path or the name
# of a zip member.
ImageListing = dict
# (split folder, file name, where) -> the split the image belongs to.
SplitRule = Callable[[str, str, str], str]


def _split_by_folder(split_folder: str, file_name: str, where: str) -> str:
    return split_folder


# ---------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------


def _listing_from_entries(
    name: str,
    entries: Iterable[tuple[str, str, str | None, object]],
    where: str,
    folder_sep: str,
    split_of: SplitRule,
) -> ImageListing:
    """Group ``(split folder, class folder, file name, reference)`` entries by split; a
    None file name marks a class folder that exists. Checks that every class folder is
    present and non-empty."""
    class_index = {class_name.lower(): i for i, class_name in enumerate(CLASS_NAMES[name])}
    folder_labels: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, int], int] = {}
    splits: dict[str, list] = {}
    for split_folder, class_folder, file_name, reference in entries:
        label = folder_labels.get((split_folder, class_folder))
        if label is None:
            label = class_index.get(class_folder.lower())
            if label is None:
                raise DatasetError(
                    f"{where}{folder_sep}{split_folder}/{class_folder}/: unknown class folder "
                    f"{class_folder!r}; {DISPLAY_NAMES[name]}'s class folders are "
                    f"{', '.join(CLASS_NAMES[name])}"
                )
            folder_labels[(split_folder, class_folder)] = label
            counts.setdefault((split_folder, label), 0)
        if file_name is None or not file_name.lower().endswith(IMAGE_SUFFIXES):
            continue
        counts[(split_folder, label)] += 1
        split = split_of(
            split_folder, file_name, f"{where}{folder_sep}{split_folder}/{class_folder}/{file_name}"
        )
        splits.setdefault(split, []).append((file_name, label, reference))
    for split_folder in ("train", "test"):
        for label, class_name in enumerate(CLASS_NAMES[name]):
            count = counts.get((split_folder, label))
            place = f"{where}{folder_sep}{split_folder}/{class_name}/"
            if count is None:
                raise DatasetError(
                    f"{place} is missing: {DISPLAY_NAMES[name]} needs one folder per class "
                    f"in train/ and test/ ({', '.join(CLASS_NAMES[name])})"
                )
            if count == 0:
                raise DatasetError(f"{place} is an empty class folder (no .png or .jpg images)")
    # By file name first, so the classes interleave: a split taken from the end of the
    # arrays (as Keras' validation_split does) is not all one class.
    for items in splits.values():
        items.sort(key=operator.itemgetter(0, 1))
    return splits


def _open_zip(path: Path) -> zipfile.ZipFile:
    """The zip at ``path``, read into memory: worker processes forked from this one then
    share it, each with its own position, and need not read its directory again."""
    try:
        return zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(
            f"{path} is not a readable zip ({first_line(exc)}): it may be truncated"
        ) from None


def list_zip(name: str, path: Path, split_of: SplitRule = _split_by_folder) -> ImageListing:
    """The images of dataset ``name`` in the zip at ``path``, by split."""
    with _open_zip(path) as archive:
        return _list_archive(name, archive, path, split_of)


def _list_archive(name: str, archive: zipfile.ZipFile, path: Path,
                  split_of: SplitRule) -> ImageListing:
    def entries():
        for info in archive.infolist():
            parts = info.filename.split("/")
            if info.is_dir():
                parts = parts[:-1] + [None]
            # train/<class>/<file>, possibly under one top folder; skip macOS metadata.
            if len(parts) < 3 or parts[-3] not in ("train", "test"):
                continue
            if any(p.startswith(("__MACOSX", ".")) for p in parts if p):
                continue
            yield parts[-3], parts[-2], parts[-1], info.filename

    return _listing_from_entries(name, entries(), str(path), "!", split_of)


def list_folder(name: str, root: Path, split_of: SplitRule = _split_by_folder) -> ImageListing:
    """The images of dataset ``name`` in ``root/train/<class>/`` and ``root/test/<class>/``."""

    def entries():
        for split_folder in ("train", "test"):
            with os.scandir(root / split_folder) as classes:
                for class_entry in sorted(classes, key=lambda e: e.name):
                    if not class_entry.is_dir() or class_entry.name.startswith("."):
                        continue
                    yield split_folder, class_entry.name, None, None
                    with os.scandir(class_entry.path) as files:
                        for file_entry in files:
                            if file_entry.is_file() and not file_entry.name.startswith("."):
                                yield split_folder, class_entry.name, file_entry.name, file_entry.path

    return _listing_from_entries(name, entries(), str(root), "/", split_of)


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------


# The JPEG colour spaces (as simplejpeg's header reader names them) that libjpeg-turbo
# decodes to exactly what Pillow gives for each target mode.
_JPEG_COLOUR_SPACES = {"L": ("Gray",), "RGB": ("YCbCr", "RGB")}


def decode_image(data: bytes, where: str, shape: tuple[int, int, int]) -> np.ndarray:
    """The PNG or JPEG ``data`` as a uint8 array of ``shape`` (converted to greyscale or
    RGB as ``shape`` says); an error naming ``where`` when it is unreadable or the wrong size."""
    height, width, channels = shape
    mode = "L" if channels == 1 else "RGB"
    if simplejpeg is not None:
        try:
            jpeg_height, jpeg_width, colour_space, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:  # not a JPEG, or a damaged one: Pillow reads it or explains
            colour_space = None
        if colour_space in _JPEG_COLOUR_SPACES[mode] and (jpeg_height, jpeg_width) == (height, width):
            try:
                return simplejpeg.decode_jpeg(data, "GRAY" if mode == "L" else "RGB").reshape(shape)
            except ValueError as exc:
                raise DatasetError(f"cannot read image {where}: {first_line(exc)}") from None
    return _decode_with_pillow(data, where, shape, mode)


def _decode_with_pillow(data: bytes, where: str, shape: tuple[int, int, int], mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    height, width, _ = shape
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as image:
            if image.size != (width, height):
                raise DatasetError(
                    f"{where}: image is {image.size[0]}x{image.size[1]}, expected {width}x{height}"
                )
            if image.mode != mode:
                image = image.convert(mode)
            pixels = np.asarray(image)
    except DatasetError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {where}: {first_line(exc)}") from None
    return pixels.reshape(shape)


def _read_member(archive: zipfile.ZipFile, path: Path, member: str) -> bytes:
    try:
        return archive.read(member)  # zipfile checks the CRC
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
            NotImplementedError) as exc:
        raise DatasetError(f"{path}: cannot read member {member} ({first_line(exc)})") from None


def _decode_members(archive: zipfile.ZipFile, path: Path, members: list[str], shape) -> np.ndarray:
    images = np.empty((len(members),) + tuple(shape), np.uint8)
    for index, member in enumerate(members):
        images[index] = decode_image(_read_member(archive, path, member), f"{path}!{member}", shape)
    return images


def _decode_files(paths: list[str], shape) -> np.ndarray:
    images = np.empty((len(paths),) + tuple(shape), np.uint8)
    for index, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read image {path}: {exc}") from None
        images[index] = decode_image(data, str(path), shape)
    return images


# The zip a worker process reads: the parent's, which the pool's initializer hands over.
_worker_archive: tuple[Path, zipfile.ZipFile] | None = None


def _share_archive(path: Path, archive: zipfile.ZipFile) -> None:
    global _worker_archive
    _worker_archive = (path, archive)


def _decode_members_in_worker(task: tuple[list[str], tuple]) -> np.ndarray:
    members, shape = task
    path, archive = _worker_archive
    return _decode_members(archive, path, members, shape)


def _decode_files_in_worker(task: tuple[list[str], tuple]) -> np.ndarray:
    return _decode_files(*task)


def _decode_in_processes(function: Callable, references: list, shape, **pool_options):
    """The images of ``references``, decoded in chunks by worker processes when there are
    enough of them to be worth it; None when the caller should decode them itself."""
    if len(references) < PARALLEL_MIN_IMAGES:
        return None
    tasks = [(references[start:stop], shape) for start, stop in chunks(len(references))]
    parts = map_in_processes(function, tasks, **pool_options)
    return None if parts is None else np.concatenate(parts)


def _decode_listing(name: str, listing: ImageListing, decode: Callable[[list], np.ndarray],
                    extra_splits: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Decode every split of ``listing`` in one pass and cut it back into splits."""
    order = [split for split in ("train", "test") + extra_splits if split in listing]
    references = [ref for split in order for _, _, ref in listing[split]]
    images = decode(references)
    arrays = {}
    start = 0
    for split in order:
        items = listing[split]
        arrays[f"x_{split}"] = images[start:start + len(items)]
        arrays[f"y_{split}"] = np.array([label for _, label, _ in items], np.int64)
        start += len(items)
    for split in extra_splits:  # a split with no images is still a split
        arrays.setdefault(f"x_{split}", np.empty((0,) + IMAGE_SHAPES[name], np.uint8))
        arrays.setdefault(f"y_{split}", np.empty((0,), np.int64))
    return arrays


def decode_zip(name: str, path: Path, split_of: SplitRule = _split_by_folder,
               extra_splits: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """``{"x_<split>": images, "y_<split>": labels}`` from the image zip at ``path``;
    ``extra_splits`` are splits beside train and test that ``split_of`` may name."""
    shape = IMAGE_SHAPES[name]
    with _open_zip(path) as archive:

        def decode(members):
            images = _decode_in_processes(_decode_members_in_worker, members, shape,
                                          initializer=_share_archive, initargs=(path, archive))
            return _decode_members(archive, path, members, shape) if images is None else images

        listing = _list_archive(name, archive, path, split_of)
        return _decode_listing(name, listing, decode, extra_splits)


def decode_folder(name: str, root: Path, split_of: SplitRule = _split_by_folder,
                  extra_splits: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """As :func:`decode_zip`, from the image folders under ``root``."""
    shape = IMAGE_SHAPES[name]

    def decode(paths):
        images = _decode_in_processes(_decode_files_in_worker, paths, shape)
        return _decode_files(paths, shape) if images is None else images

    return _decode_listing(name, list_folder(name, root, split_of), decode, extra_splits)
