"""Tests for the resnet_course.datasets package and resnet_course.pipelines.

Every form a loader reads is made here in miniature (HDF5, pickled batches and their
tarball, CSV, image folders and zips), along with each kind of bad input. Downloads go to a
local HTTP server; nothing touches the network. Tests on the real data read it only through
RESNET_COURSE_DATA and are skipped when it is not set.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from resnet_course import datasets
from resnet_course.datasets import (
    CIFAR10_CLASS_NAMES,
    FER2013_CLASS_NAMES,
    DatasetError,
    DatasetNotFoundError,
    RemoteFile,
)

REPOSITORY = Path(__file__).resolve().parent.parent
REAL_DATA = os.environ.get("RESNET_COURSE_DATA")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache, no data directory from the environment, no network: every remote
    points at a closed local port, and kagglehub cannot be imported."""
    monkeypatch.setenv("RESNET_COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESNET_COURSE_DATA", raising=False)
    for variable in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name, files in list(datasets.REMOTE_FILES.items()):
        offline = tuple(
            RemoteFile(f.filename, (f"http://127.0.0.1:9/{f.filename}",), f.known_hash)
            for f in files
        )
        monkeypatch.setitem(datasets.REMOTE_FILES, name, offline)
    monkeypatch.setitem(sys.modules, "kagglehub", None)


# ---------------------------------------------------------------------------------------
# Small datasets in every form
# ---------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)


def make_signs(folder: Path, n_train: int = 12, n_test: int = 6, **overrides) -> dict:
    """train_signs.h5 and test_signs.h5 as the course ships them; ``overrides`` replace
    datasets by key (None deletes one)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, count in (("train", n_train), ("test", n_test)):
        content = {
            f"{split}_set_x": RNG.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8),
            f"{split}_set_y": np.arange(count, dtype=np.int64) % 6,
            "list_classes": np.arange(6, dtype=np.int64),
        }
        for key, value in overrides.items():
            if key in content or key.startswith(split):
                content[key] = value
        with h5py.File(folder / f"{split}_signs.h5", "w") as h5:
            for key, value in content.items():
                if value is not None:
                    h5[key] = value
        arrays[split] = content
    return arrays


def cifar_batch(count: int, first_label: int = 0) -> dict:
    """A batch in the official format: Python 2 strings (bytes here), channel-major rows."""
    return {
        b"batch_label": b"training batch",
        b"labels": [(first_label + i) % 10 for i in range(count)],
        b"data": RNG.integers(0, 256, (count, 3072), dtype=np.uint8),
        b"filenames": [b"image_%d.png" % i for i in range(count)],
    }


def make_cifar_batches(folder: Path, per_batch: int = 4, overrides: dict | None = None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for index, name in enumerate(datasets.cifar10.BATCH_NAMES + ("test_batch",)):
        batches[name] = cifar_batch(per_batch, first_label=index)
    batches["batches.meta"] = {
        b"label_names": [n.encode() for n in CIFAR10_CLASS_NAMES],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    batches.update(overrides or {})
    for name, content in batches.items():
        if content is not None:
            (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return batches


def expected_cifar(batches: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def nhwc(data):
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    train = [batches[name] for name in datasets.cifar10.BATCH_NAMES]
    return (
        np.concatenate([nhwc(b[b"data"]) for b in train]),
        np.concatenate([b[b"labels"] for b in train]),
        nhwc(batches["test_batch"][b"data"]),
        np.array(batches["test_batch"][b"labels"]),
    )


def make_tarball(batches_folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        archive.add(batches_folder, arcname="cifar-10-batches-py")
    return target


def write_image(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path)


def make_image_folders(root: Path, name: str, per_class: int = 2, suffix: str = ".png") -> dict:
    """train/<class>/ and test/<class>/ images (FER-2013 test images in both usages),
    numbered within each class as the real zips are; returns
    {split: {"<class>/<file name>": (pixels, label)}}."""
    shape = datasets.IMAGE_SHAPES[name]
    truth: dict[str, dict] = {}
    for label, class_name in enumerate(datasets.CLASS_NAMES[name]):
        layout = [("train", "train", "Training_" if name == "fer2013" else "")]
        if name == "fer2013":
            layout += [("test", "PublicTest", "PublicTest_"), ("test", "PrivateTest", "PrivateTest_")]
        else:
            layout += [("test", "test", "")]
        for folder, split, prefix in layout:
            for index in range(per_class):
                file_name = f"{prefix}{index:04d}{suffix}"
                pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
                write_image(root / folder / class_name / file_name, pixels)
                if suffix != ".png":  # lossy: what the loader should see is the decoded file
                    with Image.open(root / folder / class_name / file_name) as image:
                        pixels = np.asarray(image).reshape(shape)
                truth.setdefault(split, {})[f"{class_name}/{file_name}"] = (pixels, label)
    return truth


def zip_folder(folder: Path, target: Path, prefix: str = "", method=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(target, "w", method) as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def assert_matches(images: np.ndarray, labels: np.ndarray, truth: dict) -> None:
    """The split holds exactly the truth's images, each with its label."""
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert len(images) == len(labels) == len(truth)
    remaining = {pixels.tobytes(): label for pixels, label in truth.values()}
    for image, label in zip(images, labels):
        assert remaining.pop(image.tobytes()) == label
    assert not remaining


def fer_csv(path: Path, rows: list[tuple], header: str = "emotion,pixels,Usage", newline="\n") -> Path:
    lines = [header] + [f"{emotion},{pixels},{usage}" for emotion, pixels, usage in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def pixel_text(values: np.ndarray) -> str:
    return " ".join(str(v) for v in values.ravel())


def random_fer_rows(count: int) -> tuple[list[tuple], np.ndarray, np.ndarray, list[str]]:
    images = RNG.integers(0, 256, (count, 48 * 48), dtype=np.uint8)
    # Make sure every digit count and both ends of the range appear.
    images[0, :6] = [0, 9, 10, 99, 100, 255]
    labels = np.arange(count) % 7
    usages = [("Training", "PublicTest", "PrivateTest")[i % 3] for i in range(count)]
    rows = [(int(e), pixel_text(p), u) for e, p, u in zip(labels, images, usages)]
    return rows, images.reshape(-1, 48, 48, 1), labels, usages


# ---------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------


def test_data_dir_prefers_argument_then_environment_then_repository(tmp_path, monkeypatch):
    assert datasets.resolve_data_dir() == REPOSITORY / "datasets"
    monkeypatch.setenv("RESNET_COURSE_DATA", str(tmp_path / "env"))
    assert datasets.resolve_data_dir() == tmp_path / "env"
    assert datasets.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_cache_dir_comes_from_environment_else_user_cache(tmp_path, monkeypatch):
    assert datasets.resolve_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("RESNET_COURSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    default = datasets.resolve_cache_dir()
    assert "resnet-course" in default.parts and REPOSITORY not in default.parents


def test_dataset_folder_itself_is_accepted_as_data_dir(tmp_path):
    make_signs(tmp_path / "signs")
    assert datasets.find_source("signs", tmp_path / "signs").path == tmp_path / "signs"
    assert datasets.find_source("signs", tmp_path).path == tmp_path / "signs"


def test_unknown_dataset_name_is_a_clear_error():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'.*signs, cifar10, fer2013"):
        datasets.find_source("mnist")


# ---------------------------------------------------------------------------------------
# SIGNS
# ---------------------------------------------------------------------------------------


def test_signs_loads_arrays_and_class_names(tmp_path):
    written = make_signs(tmp_path / "signs")
    (x_train, y_train), (x_test, y_test), class_names = datasets.load_signs(tmp_path)
    assert class_names == ["0", "1", "2", "3", "4", "5"]
    assert x_train.shape == (12, 64, 64, 3) and x_train.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_test.shape == (6,)
    np.testing.assert_array_equal(x_train, written["train"]["train_set_x"])
    np.testing.assert_array_equal(y_test, written["test"]["test_set_y"])
    assert not (tmp_path / "cache").exists()  # HDF5 is read directly, never cached


def test_signs_accepts_row_vector_labels(tmp_path):
    make_signs(tmp_path / "signs", train_set_y=(np.arange(12) % 6).reshape(1, 12))
    (_, y_train), _, _ = datasets.load_signs(tmp_path)
    np.testing.assert_array_equal(y_train, np.arange(12) % 6)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable HDF5 file"),
        (b"this is not hdf5" * 100, "not a readable HDF5 file"),
    ],
)
def test_signs_rejects_files_that_are_not_hdf5(tmp_path, content, message):
    make_signs(tmp_path / "signs")
    (tmp_path / "signs" / "test_signs.h5").write_bytes(content)
    with pytest.raises(DatasetError, match=message) as error:
        datasets.load_signs(tmp_path)
    assert "test_signs.h5" in str(error.value)


def test_signs_rejects_a_truncated_file(tmp_path):
    make_signs(tmp_path / "signs")
    path = tmp_path / "signs" / "train_signs.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="train_signs.h5.*truncated"):
        datasets.load_signs(tmp_path)


def test_signs_names_a_missing_key(tmp_path):
    make_signs(tmp_path / "signs", train_set_y=None)
    with pytest.raises(DatasetError, match=r"train_signs.h5 has no dataset 'train_set_y' \(found: list_classes, train_set_x\)"):
        datasets.load_signs(tmp_path)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"train_set_x": np.zeros((12, 32, 32, 3), np.uint8)}, r"shape \(12, 32, 32, 3\), expected \(n, 64, 64, 3\)"),
        ({"train_set_x": np.zeros((12, 64, 64, 3), np.float32)}, "dtype float32, expected uint8"),
        ({"train_set_y": np.arange(12) % 6 + 1}, "label 6 at index 5 is out of range 0-5"),
        ({"train_set_y": np.arange(11) % 6}, "11 labels for 12 images"),
        ({"train_set_y": np.linspace(0, 5, 12)}, "dtype float64, expected integers"),
        ({"list_classes": np.arange(1, 7)}, r"list_classes is \[1, 2, 3, 4, 5, 6\]"),
    ],
)
def test_signs_rejects_wrong_shapes_dtypes_and_labels(tmp_path, override, message):
    make_signs(tmp_path / "signs", **override)
    with pytest.raises(DatasetError, match=message) as error:
        datasets.load_signs(tmp_path)
    assert "train_signs.h5" in str(error.value)


def test_missing_signs_says_where_it_looked_and_how_to_get_it(tmp_path):
    (tmp_path / "signs").mkdir()
    (tmp_path / "signs" / "train_signs.h5").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError) as error:
        datasets.load_signs(tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "signs") in message and "test_signs.h5" in message
    assert "resnet-course data fetch signs" in message and "RESNET_COURSE_DATA" in message


def test_offline_download_failure_is_a_clear_message(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="Could not download train_signs.h5 .*127.0.0.1:9") as error:
        datasets.load_signs(tmp_path)
    assert "Traceback" not in str(error.value)
    assert str(tmp_path / "signs") in str(error.value)


# ---------------------------------------------------------------------------------------
# Downloads, against a local HTTP server
# ---------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; under /interrupted/ it sends half of a file and hangs up."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.startswith("/interrupted/"):
            return super().do_GET()
        body = (Path(self.directory) / self.path.split("/")[-1]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True


@pytest.fixture
def file_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def serve_signs(served: Path, base: str, monkeypatch, *, corrupt_hash: bool = False):
    make_signs(served)
    remotes = tuple(
        RemoteFile(
            name,
            (base + "missing/" + name, base + name),  # the first mirror is a 404
            "sha256:" + "0" * 64 if corrupt_hash else sha256_of(served / name),
        )
        for name in ("train_signs.h5", "test_signs.h5")
    )
    monkeypatch.setitem(datasets.REMOTE_FILES, "signs", remotes)


def test_download_falls_through_mirrors_and_verifies_the_checksum(tmp_path, file_server, monkeypatch):
    served, base = file_server
    serve_signs(served, base, monkeypatch)
    data = tmp_path / "data"
    (x_train, _), (x_test, _), _ = datasets.load_signs(data)
    assert (data / "signs" / "train_signs.h5").read_bytes() == (served / "train_signs.h5").read_bytes()
    assert x_train.shape == (12, 64, 64, 3) and x_test.shape == (6, 64, 64, 3)


def test_download_with_a_wrong_checksum_leaves_no_file(tmp_path, file_server, monkeypatch):
    served, base = file_server
    serve_signs(served, base, monkeypatch, corrupt_hash=True)
    data = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError, match="(?i)could not download train_signs.h5.*hash"):
        datasets.fetch("signs", data)
    assert list((data / "signs").iterdir()) == []


def test_interrupted_download_leaves_no_file(tmp_path, file_server, monkeypatch):
    served, base = file_server
    make_signs(served)
    monkeypatch.setitem(datasets.REMOTE_FILES, "signs", tuple(
        RemoteFile(name, (base + "interrupted/" + name,), sha256_of(served / name))
        for name in ("train_signs.h5", "test_signs.h5")
    ))
    with pytest.raises(DatasetNotFoundError, match="Could not download train_signs.h5"):
        datasets.fetch("signs", tmp_path / "data")
    assert list((tmp_path / "data" / "signs").iterdir()) == []


def test_download_fetches_only_the_missing_file(tmp_path, file_server, monkeypatch):
    served, base = file_server
    serve_signs(served, base, monkeypatch)
    own = make_signs(tmp_path / "data" / "signs", n_train=18)  # the user's own train file
    (tmp_path / "data" / "signs" / "test_signs.h5").unlink()
    (x_train, _), (x_test, _), _ = datasets.load_signs(tmp_path / "data")
    np.testing.assert_array_equal(x_train, own["train"]["train_set_x"])
    assert x_test.shape == (6, 64, 64, 3)


def test_cifar10_downloads_the_official_tarball(tmp_path, file_server, monkeypatch):
    served, base = file_server
    batches = make_cifar_batches(tmp_path / "made" / "cifar-10-batches-py")
    tarball = make_tarball(tmp_path / "made" / "cifar-10-batches-py", served / "cifar-10-python.tar.gz")
    md5 = "md5:" + hashlib.md5(tarball.read_bytes()).hexdigest()
    monkeypatch.setitem(
        datasets.REMOTE_FILES, "cifar10",
        (RemoteFile("cifar-10-python.tar.gz", (base + "cifar-10-python.tar.gz",), md5),),
    )
    (x_train, y_train), _, _ = datasets.load_cifar10(tmp_path / "data")
    assert datasets.find_source("cifar10", tmp_path / "data").form == "cifar-tarball"
    np.testing.assert_array_equal(x_train, expected_cifar(batches)[0])


# ---------------------------------------------------------------------------------------
# CIFAR-10: batches, tarball
# ---------------------------------------------------------------------------------------


def test_cifar10_batches_load_as_nhwc(tmp_path):
    batches = make_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    (x_train, y_train), (x_test, y_test), class_names = datasets.load_cifar10(tmp_path)
    assert class_names == list(CIFAR10_CLASS_NAMES)
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (4, 32, 32, 3)
    x_train_expected, y_train_expected, x_test_expected, y_test_expected = expected_cifar(batches)
    np.testing.assert_array_equal(x_train, x_train_expected)
    np.testing.assert_array_equal(y_train, y_train_expected)
    np.testing.assert_array_equal(x_test, x_test_expected)
    np.testing.assert_array_equal(y_test, y_test_expected)
    # Row layout of the official batches: 1024 red values, then green, then blue.
    first = batches["data_batch_1"][b"data"][0]
    assert x_train[0, 0, 1].tolist() == [first[1], first[1024 + 1], first[2048 + 1]]


def test_cifar10_tarball_matches_the_batches(tmp_path):
    batches = make_cifar_batches(tmp_path / "made" / "cifar-10-batches-py")
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    make_tarball(tmp_path / "made" / "cifar-10-batches-py", tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz")
    (x_train, y_train), (x_test, _), _ = datasets.load_cifar10(tmp_path / "data")
    np.testing.assert_array_equal(x_train, expected_cifar(batches)[0])
    np.testing.assert_array_equal(x_test, expected_cifar(batches)[2])


def test_cifar10_truncated_tarball_is_a_clear_error(tmp_path):
    make_cifar_batches(tmp_path / "made" / "cifar-10-batches-py")
    tarball = make_tarball(tmp_path / "made" / "cifar-10-batches-py", tmp_path / "whole.tar.gz")
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(tarball.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz.*truncated"):
        datasets.load_cifar10(tmp_path)


class _Exploit:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_batches_refuse_arbitrary_objects(tmp_path):
    marker = tmp_path / "exploited"
    make_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=2))
    with pytest.raises(DatasetError, match="data_batch_2 is not a readable CIFAR-10 batch: refusing to load"):
        datasets.load_cifar10(tmp_path)
    assert not marker.exists()


def test_cifar10_reads_batches_pickled_with_protocol_5(tmp_path):
    batches = make_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(batches["test_batch"], protocol=5))
    _, (x_test, _), _ = datasets.load_cifar10(tmp_path)
    np.testing.assert_array_equal(x_test, expected_cifar(batches)[2])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data_batch_3": None}, "lacks data_batch_3"),
        ({"data_batch_2": {b"data": np.zeros((2, 3072), np.uint8)}}, r"data_batch_2 has no key 'labels' \(found: data\)"),
        ({"data_batch_2": {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}}, r"data_batch_2: 'data' has shape \(2, 1024\)"),
        ({"data_batch_2": {b"data": np.zeros((2, 3072), np.int32), b"labels": [0, 1]}}, "data_batch_2: 'data' has dtype int32"),
        ({"test_batch": {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}}, r"test_batch \['labels'\]: label 10 at index 1 is out of range 0-9"),
        ({"data_batch_1": b"not a pickle"}, "data_batch_1 is not a readable CIFAR-10 batch"),
        ({"batches.meta": {b"label_names": [b"cat", b"dog"]}}, "batches.meta: label_names"),
    ],
)
def test_cifar10_bad_batches_name_the_file_and_problem(tmp_path, overrides, message):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    not_pickles = {k: v for k, v in overrides.items() if isinstance(v, bytes)}
    make_cifar_batches(folder, overrides={k: v for k, v in overrides.items() if k not in not_pickles})
    for name, content in not_pickles.items():
        (folder / name).write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        datasets.load_cifar10(tmp_path)


# ---------------------------------------------------------------------------------------
# Image folders and zips
# ---------------------------------------------------------------------------------------


def test_cifar10_image_folder(tmp_path):
    truth = make_image_folders(tmp_path / "cifar10", "cifar10")
    source = datasets.find_source("cifar10", tmp_path)
    assert source.form == "image-folder"
    (x_train, y_train), (x_test, y_test), _ = datasets.load_cifar10(tmp_path)
    assert_matches(x_train, y_train, truth["train"])
    assert_matches(x_test, y_test, truth["test"])
    # Ordered by file name, so the classes are interleaved rather than in blocks.
    assert y_train[:10].tolist() == list(range(10))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("prefix", ["", "cifar10-images/"])
def test_cifar10_image_zip(tmp_path, method, prefix):
    truth = make_image_folders(tmp_path / "made", "cifar10", suffix=".jpg")
    (tmp_path / "cifar10").mkdir()
    zip_folder(tmp_path / "made", tmp_path / "cifar10" / "images.zip", prefix, method)
    (x_train, y_train), (x_test, y_test), _ = datasets.load_cifar10(tmp_path)
    assert_matches(x_train, y_train, truth["train"])
    assert_matches(x_test, y_test, truth["test"])


def test_fer2013_image_folder_splits_by_usage_and_uses_the_csv_class_order(tmp_path):
    truth = make_image_folders(tmp_path / "fer2013", "fer2013", suffix=".jpg")
    (x_train, y_train), (x_private, y_private), class_names = datasets.load_fer2013(tmp_path)
    _, (x_public, y_public), _ = datasets.load_fer2013(tmp_path, test_split="PublicTest")
    assert class_names == list(FER2013_CLASS_NAMES)
    assert x_train.shape == (14, 48, 48, 1)
    assert_matches(x_train, y_train, truth["train"])
    assert_matches(x_private, y_private, truth["PrivateTest"])
    assert_matches(x_public, y_public, truth["PublicTest"])
    # The folder "neutral" is index 6 and "sad" index 4, as in the CSV, not alphabetical.
    labels = {key.split("/")[0]: label for key, (_, label) in truth["train"].items()}
    assert labels["neutral"] == 6 and labels["sad"] == 4 and labels["surprise"] == 5


def test_fer2013_kaggle_zip_as_downloaded(tmp_path):
    truth = make_image_folders(tmp_path / "made", "fer2013")
    (tmp_path / "fer2013").mkdir()
    zip_folder(tmp_path / "made", tmp_path / "fer2013" / "archive.zip")
    assert datasets.find_source("fer2013", tmp_path).form == "image-zip"
    (x_train, y_train), (x_test, y_test), _ = datasets.load_fer2013(tmp_path)
    assert_matches(x_train, y_train, truth["train"])
    assert_matches(x_test, y_test, truth["PrivateTest"])


def test_fer2013_converts_colour_images_to_grey(tmp_path):
    make_image_folders(tmp_path / "fer2013", "fer2013", per_class=1)
    colour = RNG.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    path = tmp_path / "fer2013" / "train" / "happy" / "Training_9999.png"
    write_image(path, colour)
    (x_train, y_train), _, _ = datasets.load_fer2013(tmp_path)
    grey = np.asarray(Image.fromarray(colour).convert("L"))
    assert any((image[..., 0] == grey).all() for image in x_train[y_train == 3])


def test_fer2013_converts_colour_jpegs_as_pillow_does(tmp_path, jpeg_decoder):
    make_image_folders(tmp_path / "fer2013", "fer2013", per_class=1)
    path = tmp_path / "fer2013" / "train" / "happy" / "Training_9999.jpg"
    Image.fromarray(RNG.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path, "JPEG")
    (x_train, y_train), _, _ = datasets.load_fer2013(tmp_path)
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"))
    assert any((image[..., 0] == grey).all() for image in x_train[y_train == 3])


def test_unknown_test_split_is_rejected(tmp_path):
    with pytest.raises(DatasetError, match="'Validation' is not a FER-2013 test split"):
        datasets.load_fer2013(tmp_path, test_split="Validation")


def test_parallel_decoding_matches_and_reports_bad_members(tmp_path, monkeypatch):
    truth = make_image_folders(tmp_path / "made", "cifar10", per_class=3, suffix=".jpg")
    (tmp_path / "cifar10").mkdir()
    zip_folder(tmp_path / "made", tmp_path / "cifar10" / "images.zip")
    monkeypatch.setattr(datasets.images, "PARALLEL_MIN_IMAGES", 0)
    monkeypatch.setattr(datasets.core, "worker_count", lambda: 2)
    (x_train, y_train), _, _ = datasets.load_cifar10(tmp_path, cache=False)
    assert_matches(x_train, y_train, truth["train"])
    (tmp_path / "made" / "test" / "ship" / "0002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    zip_folder(tmp_path / "made", tmp_path / "cifar10" / "images.zip")
    with pytest.raises(DatasetError, match=r"cannot read image .*images.zip!test/ship/0002.jpg"):
        datasets.load_cifar10(tmp_path, cache=False)


def break_folder(root: Path, problem: str) -> str:
    """Introduce one problem into image folders; return the text the error must contain."""
    if problem == "empty class folder":
        for path in (root / "test" / "cat").iterdir():
            path.unlink()
        return "test/cat/ is an empty class folder"
    if problem == "missing class folder":
        for path in (root / "train" / "dog").iterdir():
            path.unlink()
        (root / "train" / "dog").rmdir()
        return "train/dog/ is missing"
    if problem == "unknown class folder":
        write_image(root / "train" / "unicorn" / "0000.png", np.zeros((32, 32, 3), np.uint8))
        return "train/unicorn/: unknown class folder 'unicorn'"
    if problem == "unreadable image":
        (root / "train" / "bird" / "0001.png").write_bytes(b"\x89PNG garbage")
        return "cannot read image .*train/bird/0001.png"
    if problem == "truncated image":
        path = root / "train" / "bird" / "0001.png"
        path.write_bytes(path.read_bytes()[:100])
        return "cannot read image .*train/bird/0001.png"
    if problem == "wrong size":
        write_image(root / "train" / "frog" / "0000.png", np.zeros((31, 32, 3), np.uint8))
        return "train/frog/0000.png: image is 32x31, expected 32x32"
    raise AssertionError(problem)


@pytest.mark.parametrize(
    "problem",
    ["empty class folder", "missing class folder", "unknown class folder", "unreadable image",
     "truncated image", "wrong size"],
)
@pytest.mark.parametrize("as_zip", [False, True])
def test_bad_image_folders_name_the_folder_or_file(tmp_path, problem, as_zip):
    root = tmp_path / "made" if as_zip else tmp_path / "cifar10"
    make_image_folders(root, "cifar10")
    expected = break_folder(root, problem)
    if as_zip:
        (tmp_path / "cifar10").mkdir()
        zip_folder(root, tmp_path / "cifar10" / "images.zip")  # empty folders stay, as entries
    with pytest.raises(DatasetError, match=expected):
        datasets.load_cifar10(tmp_path)


@pytest.fixture(params=["simplejpeg", "pillow only"])
def jpeg_decoder(request, monkeypatch):
    """Each JPEG test runs with simplejpeg (when installed) and with Pillow alone."""
    if request.param == "simplejpeg":
        pytest.importorskip("simplejpeg")
    else:
        monkeypatch.setattr(datasets.images, "simplejpeg", None)
    return request.param


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("name", ["fer2013", "cifar10"])
def test_jpegs_in_a_zip_decode_exactly_as_pillow_decodes_them(tmp_path, name, progressive, jpeg_decoder):
    """Baseline and progressive JPEGs, greyscale and colour: the loader's pixels are
    Pillow's, and a PNG beside them is read as well."""
    shape = datasets.IMAGE_SHAPES[name]
    truth = make_image_folders(tmp_path / "made", name, per_class=1, suffix=".png")
    expected = {}
    for key, (pixels, _) in truth["train"].items():
        png = tmp_path / "made" / "train" / key
        if key.startswith(datasets.CLASS_NAMES[name][0] + "/"):
            expected[key[:-4] + ".png"] = pixels  # one class stays PNG
            continue
        png.unlink()
        jpeg = png.with_suffix(".jpg")
        Image.fromarray(pixels.squeeze()).save(jpeg, "JPEG", progressive=progressive, quality=90)
        with Image.open(jpeg) as image:
            expected[key[:-4] + ".jpg"] = np.asarray(image).reshape(shape)
    (tmp_path / name).mkdir()
    zip_folder(tmp_path / "made", tmp_path / name / "images.zip", method=zipfile.ZIP_DEFLATED)
    (x_train, _), _, _ = datasets.load_dataset(name, tmp_path)
    assert len(x_train) == len(expected)
    remaining = {pixels.tobytes() for pixels in expected.values()}
    for image in x_train:
        remaining.remove(image.tobytes())


def test_corrupt_zip_member_names_the_member(tmp_path):
    make_image_folders(tmp_path / "made", "cifar10", per_class=1)
    archive = zip_folder(tmp_path / "made", tmp_path / "cifar10.zip")  # stored: bytes as they are
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo("train/bird/0000.png")
    data = bytearray(archive.read_bytes())
    # Flip one pixel byte near the end of the member's data: its CRC no longer matches.
    data[info.header_offset + 30 + len(info.filename) + info.compress_size - 20] ^= 0xFF
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "images.zip").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"images.zip: cannot read member train/bird/0000.png \(Bad CRC"):
        datasets.load_cifar10(tmp_path)


@pytest.mark.parametrize("problem", ["truncated", "wrong size", "garbage after the marker"])
def test_bad_jpegs_name_the_file(tmp_path, problem, jpeg_decoder):
    make_image_folders(tmp_path / "cifar10", "cifar10", per_class=1, suffix=".jpg")
    path = tmp_path / "cifar10" / "train" / "deer" / "0000.jpg"
    if problem == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        expected = "cannot read image .*train/deer/0000.jpg"
    elif problem == "wrong size":
        write_image(path, np.zeros((32, 40, 3), np.uint8))
        expected = "train/deer/0000.jpg: image is 40x32, expected 32x32"
    else:
        path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10 this is not a real JPEG")
        expected = "cannot read image .*train/deer/0000.jpg"
    with pytest.raises(DatasetError, match=expected):
        datasets.load_cifar10(tmp_path)


def test_fer2013_test_image_without_usage_prefix_is_rejected(tmp_path):
    make_image_folders(tmp_path / "fer2013", "fer2013", per_class=1)
    write_image(tmp_path / "fer2013" / "test" / "fear" / "im0.png", np.zeros((48, 48, 1), np.uint8))
    with pytest.raises(DatasetError, match="test/fear/im0.png: cannot tell whether this test image is PublicTest or PrivateTest"):
        datasets.load_fer2013(tmp_path)


def test_truncated_zip_is_a_clear_error(tmp_path):
    make_image_folders(tmp_path / "made", "fer2013", per_class=1)
    whole = zip_folder(tmp_path / "made", tmp_path / "whole.zip")
    (tmp_path / "fer2013").mkdir()
    (tmp_path / "fer2013" / "fer2013.zip").write_bytes(whole.read_bytes()[:-200])
    with pytest.raises(DatasetError, match="fer2013.zip is not a readable zip"):
        datasets.load_fer2013(tmp_path)


# ---------------------------------------------------------------------------------------
# FER-2013: the CSV
# ---------------------------------------------------------------------------------------


def test_fer2013_csv_loads_every_split(tmp_path):
    rows, images, labels, usages = random_fer_rows(30)
    fer_csv(tmp_path / "fer2013" / "fer2013.csv", rows)
    usages = np.array(usages)
    (x_train, y_train), (x_test, y_test), _ = datasets.load_fer2013(tmp_path)
    np.testing.assert_array_equal(x_train, images[usages == "Training"])
    np.testing.assert_array_equal(y_train, labels[usages == "Training"])
    np.testing.assert_array_equal(x_test, images[usages == "PrivateTest"])
    _, (x_public, y_public), _ = datasets.load_fer2013(tmp_path, test_split="PublicTest")
    np.testing.assert_array_equal(x_public, images[usages == "PublicTest"])
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and x_train.shape[1:] == (48, 48, 1)


def test_fer2013_csv_is_preferred_over_image_folders(tmp_path):
    make_image_folders(tmp_path / "fer2013", "fer2013", per_class=1)
    fer_csv(tmp_path / "fer2013" / "fer2013.csv", random_fer_rows(3)[0])
    assert datasets.find_source("fer2013", tmp_path).form == "fer-csv"


def test_fer2013_csv_read_by_worker_processes_in_many_chunks_agrees(tmp_path, monkeypatch):
    rows, images, _, usages = random_fer_rows(50)
    fer_csv(tmp_path / "fer2013" / "fer2013.csv", rows)
    monkeypatch.setattr(datasets.fer2013, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(datasets.core, "worker_count", lambda: 4)  # 12 chunks of 4-5 rows
    row_by_row_calls = []
    original = datasets.fer2013._read_csv_row_by_row
    monkeypatch.setattr(
        datasets.fer2013, "_read_csv_row_by_row",
        lambda *args: row_by_row_calls.append(1) or original(*args),
    )
    (x_train, _), _, _ = datasets.load_fer2013(tmp_path, cache=False)
    np.testing.assert_array_equal(x_train, images[np.array(usages) == "Training"])
    assert not row_by_row_calls  # a well-formed file never needs the slow reader


def test_fer2013_csv_tolerates_quotes_crlf_bom_and_extra_spaces(tmp_path):
    rows, images, _, usages = random_fer_rows(6)
    rows = [(e, f'"  {p.replace(" ", "  ", 5)} "', u) for e, p, u in rows]
    path = fer_csv(tmp_path / "fer2013" / "fer2013.csv", rows, newline="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes() + b"\r\n")
    (x_train, _), _, _ = datasets.load_fer2013(tmp_path)
    np.testing.assert_array_equal(x_train, images[np.array(usages) == "Training"])


@pytest.mark.parametrize(
    "row_index, bad_row, message",
    [
        (3, (1, "1 2 3", "Training"), r"row 4 \(line 5\): 3 pixel values, expected 2304"),
        (2, (1, "7 " * 2304 + "7", "Training"), r"row 3 \(line 4\): 2305 pixel values"),
        (1, (1, "7 " * 2303 + "256", "Training"), r"row 2 \(line 3\): pixel value '256' is not an integer 0-255"),
        (1, (1, "7 " * 2303 + "-1", "Training"), r"row 2 \(line 3\): pixel value '-1'"),
        (1, (1, "7 " * 2303 + "4x", "Training"), r"row 2 \(line 3\): pixel value '4x'"),
        (0, (1, "7 " * 2303 + "7", "Validation"), r"row 1 \(line 2\): unknown Usage 'Validation'"),
        (4, (7, "7 " * 2303 + "7", "Training"), r"row 5 \(line 6\): emotion '7' is not an integer 0-6"),
        (4, (1, "7 " * 2303 + "7,x", "Training"), r"row 5 \(line 6\): expected 3 comma-separated fields"),
    ],
)
def test_fer2013_csv_errors_give_the_row(tmp_path, row_index, bad_row, message):
    rows = random_fer_rows(6)[0]
    rows[row_index] = bad_row
    fer_csv(tmp_path / "fer2013" / "fer2013.csv", rows)
    with pytest.raises(DatasetError, match="fer2013.csv, " + message):
        datasets.load_fer2013(tmp_path)


def test_fer2013_csv_with_a_wrong_header_or_no_rows(tmp_path):
    path = fer_csv(tmp_path / "fer2013" / "fer2013.csv", random_fer_rows(2)[0], header="label,pixels")
    with pytest.raises(DatasetError, match="header 'label,pixels' is not FER-2013's"):
        datasets.load_fer2013(tmp_path)
    path.write_text("emotion,pixels,Usage\n")
    with pytest.raises(DatasetError, match="fer2013.csv has a header but no rows"):
        datasets.load_fer2013(tmp_path)


def test_fer2013_columns_may_come_in_another_order(tmp_path):
    rows, images, labels, usages = random_fer_rows(6)
    reordered = [(e, u, p) for e, p, u in rows]  # icml_face_data.csv: emotion, Usage, pixels
    path = tmp_path / "fer2013" / "fer2013.csv"
    path.parent.mkdir()
    path.write_text("emotion, Usage, pixels\n" + "".join(f"{e},{u},{p}\n" for e, u, p in reordered))
    (x_train, y_train), _, _ = datasets.load_fer2013(tmp_path)
    training = np.array(usages) == "Training"
    np.testing.assert_array_equal(x_train, images[training])
    np.testing.assert_array_equal(y_train, labels[training])


def test_missing_fer2013_explains_kaggle_and_where_to_put_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        datasets.load_fer2013(tmp_path)
    message = str(error.value)
    assert "kaggle.com/datasets/msambare/fer2013" in message
    assert f"put it in {tmp_path / 'fer2013'}" in message and "kagglehub" in message


def test_fer2013_through_kagglehub_when_configured(tmp_path, monkeypatch):
    downloaded = tmp_path / "kaggle-cache" / "versions" / "1"
    truth = make_image_folders(downloaded, "fer2013", per_class=1)
    calls = []

    class FakeKagglehub:
        @staticmethod
        def dataset_download(handle):
            calls.append(handle)
            return str(downloaded)

    monkeypatch.setitem(sys.modules, "kagglehub", FakeKagglehub)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DatasetNotFoundError):  # installed but without credentials: not tried
        datasets.fetch("fer2013", tmp_path / "data")
    assert calls == []
    monkeypatch.setenv("KAGGLE_USERNAME", "student")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    (x_train, y_train), _, _ = datasets.load_fer2013(tmp_path / "data")
    assert calls == ["msambare/fer2013"]
    assert (tmp_path / "data" / "fer2013" / "train" / "happy").is_dir()
    assert_matches(x_train, y_train, truth["train"])


# ---------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------


def entries(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache").iterdir())


def test_cache_is_used_then_invalidated_when_the_source_changes(tmp_path, monkeypatch):
    rows, images, _, usages = random_fer_rows(9)
    path = fer_csv(tmp_path / "fer2013" / "fer2013.csv", rows)
    before = sorted(p.name for p in (tmp_path / "fer2013").iterdir())
    first = datasets.load_fer2013(tmp_path)
    assert sorted(p.name for p in (tmp_path / "fer2013").iterdir()) == before  # nothing beside the source
    [entry] = entries(tmp_path)

    def no_decoding(source):
        raise AssertionError("decoded again despite a current cache")

    monkeypatch.setitem(datasets.fer2013.DECODERS, "fer-csv", no_decoding)
    second = datasets.load_fer2013(tmp_path)
    np.testing.assert_array_equal(first[0][0], second[0][0])
    monkeypatch.undo()
    monkeypatch.setenv("RESNET_COURSE_CACHE", str(tmp_path / "cache"))

    rows[0] = (rows[0][0], pixel_text(np.full(2304, 42)), "Training")
    fer_csv(path, rows)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    (x_train, _), _, _ = datasets.load_fer2013(tmp_path)
    assert (x_train[0] == 42).all()
    assert entries(tmp_path) != [entry] and len(entries(tmp_path)) == 1  # the stale entry is gone


def test_cache_is_keyed_by_every_file_of_an_image_folder(tmp_path):
    make_image_folders(tmp_path / "cifar10", "cifar10", per_class=1)
    (x_train, _), _, _ = datasets.load_cifar10(tmp_path)
    write_image(tmp_path / "cifar10" / "train" / "cat" / "9999.png", np.zeros((32, 32, 3), np.uint8))
    (x_train_after, _), _, _ = datasets.load_cifar10(tmp_path)
    assert len(x_train_after) == len(x_train) + 1


def test_corrupt_cache_is_rebuilt(tmp_path):
    fer_csv(tmp_path / "fer2013" / "fer2013.csv", random_fer_rows(6)[0])
    expected = datasets.load_fer2013(tmp_path)[0][0]
    [entry] = entries(tmp_path)
    (tmp_path / "cache" / entry / "x_train.npy").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="ignoring unreadable cache"):
        (x_train, _), _, _ = datasets.load_fer2013(tmp_path)
    np.testing.assert_array_equal(x_train, expected)


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("RESNET_COURSE_CACHE", str(tmp_path / "not-a-folder" / "cache"))
    fer_csv(tmp_path / "fer2013" / "fer2013.csv", random_fer_rows(3)[0])
    with pytest.warns(UserWarning, match="cannot write the dataset cache"):
        (x_train, _), _, _ = datasets.load_fer2013(tmp_path)
    assert len(x_train) == 1


def test_describe_dataset_reports_counts_and_cache(tmp_path):
    make_cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py")
    info = datasets.describe_dataset("cifar10", tmp_path)
    assert info.source.form == "cifar-batches"
    assert info.splits["train"].x_shape == (20, 32, 32, 3) and info.splits["test"].y_dtype == "int64"
    assert sum(info.splits["train"].class_counts) == 20
    assert info.cache_entry is not None and info.cache_entry.parent == tmp_path / "cache"
    assert str(info.cache_entry) in info.format() and "per class" in info.format()


def test_loading_does_not_import_tensorflow(tmp_path):
    """Importing the datasets package and loading never import TensorFlow."""
    make_signs(tmp_path / "signs")
    script = (
        "import sys\n"
        "from resnet_course import datasets\n"
        f"datasets.load_signs({str(tmp_path)!r})\n"
        "print('tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=REPOSITORY)
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------
# The real data (only through RESNET_COURSE_DATA)
# ---------------------------------------------------------------------------------------

needs_real_data = pytest.mark.skipif(
    not REAL_DATA or not Path(REAL_DATA).is_dir(),
    reason="set RESNET_COURSE_DATA to the shared real datasets folder to run this",
)


@needs_real_data
def test_real_signs():
    (x_train, y_train), (x_test, y_test), _ = datasets.load_signs(REAL_DATA, download=False)
    assert x_train.shape == (1080, 64, 64, 3) and x_test.shape == (120, 64, 64, 3)
    assert np.bincount(y_train).tolist() == [180] * 6 and np.bincount(y_test).tolist() == [20] * 6


@needs_real_data
@pytest.mark.parametrize(
    "name, counts",
    [("cifar10", {"train": 50000, "test": 10000}),
     ("fer2013", {"train": 28709, "PublicTest": 3589, "PrivateTest": 3589})],
)
def test_real_zips_have_the_expected_layout(name, counts):
    source = datasets.find_source(name, REAL_DATA)
    assert source.form == "image-zip"
    listing = {"cifar10": datasets.cifar10, "fer2013": datasets.fer2013}[name].list_images(source)
    assert {split: len(items) for split, items in listing.items()} == counts


# ---------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipelines():
    return pytest.importorskip("resnet_course.pipelines")


def _engines():
    """Both input engines where TensorFlow is installed and Keras runs on it; NumPy always."""
    import keras

    return ["numpy", "tf.data"] if keras.backend.backend() == "tensorflow" else ["numpy"]


@pytest.fixture(params=["numpy", "tf.data"])
def engine(request):
    if request.param not in _engines():
        pytest.skip("tf.data feeds the TensorFlow backend only")
    return request.param


def _array(tensor):
    return np.asarray(tensor)


def signs_like(count: int = 60):
    x = RNG.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
    return x, np.arange(count) % 6


def test_split_validation_is_deterministic_and_stratified(pipelines):
    x, y = signs_like(120)
    (x_fit, y_fit), (x_val, y_val) = pipelines.split_validation(x, y, 0.25, seed=7)
    (_, _), (x_val_again, _) = pipelines.split_validation(x, y, 0.25, seed=7)
    (_, _), (x_val_other, _) = pipelines.split_validation(x, y, 0.25, seed=8)
    np.testing.assert_array_equal(x_val, x_val_again)
    assert not np.array_equal(x_val, x_val_other)
    assert np.bincount(y_val).tolist() == [5] * 6 and len(y_fit) == 90
    together = {image.tobytes() for image in np.concatenate([x_fit, x_val])}
    assert len(together) == 120  # a partition: nothing lost, nothing duplicated


def test_make_datasets_batches_scales_and_splits(pipelines, engine):
    x, y = signs_like(60)
    data = pipelines.make_datasets("signs", x, y, batch_size=16, validation_fraction=0.2, one_hot=True,
                                   engine=engine)
    assert data.engine == engine
    images, labels = (_array(t) for t in next(iter(data.train)))
    assert images.shape == (16, 64, 64, 3) and images.dtype.name == "float32"
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert labels.shape == (16, 6)
    assert data.train_size == 48 and data.steps_per_epoch == 3 and len(data.x_val) == 12
    val_images, val_labels = (_array(t) for t in next(iter(data.validation)))
    np.testing.assert_allclose(val_images, data.x_val[:12] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(val_labels.argmax(1), data.y_val[:12])
    assert sum(int(b[0].shape[0]) for b in data.train) == 48


def _first_epoch_and_next(data):
    """The first batch of two successive epochs (PyDataset: Keras calls on_epoch_end between)."""
    first = _array(next(iter(data.train))[0])
    if hasattr(data.train, "on_epoch_end"):
        data.train.on_epoch_end()
    return first, _array(next(iter(data.train))[0])


def test_augmentation_is_reproducible_and_changes_every_epoch(pipelines, engine):
    x, y = signs_like(32)
    first = pipelines.make_datasets("signs", x, y, batch_size=32, validation_fraction=0, seed=3, engine=engine)
    second = pipelines.make_datasets("signs", x, y, batch_size=32, validation_fraction=0, seed=3, engine=engine)
    epoch_one, epoch_two = _first_epoch_and_next(first)
    np.testing.assert_array_equal(epoch_one, _array(next(iter(second.train))[0]))
    assert not np.array_equal(epoch_one, epoch_two)
    plain = pipelines.make_datasets("signs", x, y, batch_size=32, validation_fraction=0, augment=False, seed=3,
                                    engine=engine)
    images = _array(next(iter(plain.train))[0])
    # Without augmentation every batch image is exactly one of the inputs, scaled.
    inputs = {image.tobytes() for image in x}
    assert all((np.round(image * 255).astype(np.uint8)).tobytes() in inputs for image in images)


def test_numpy_batches_are_a_function_of_seed_epoch_and_index(pipelines):
    x, y = signs_like(64)
    data = pipelines.make_datasets("signs", x, y, batch_size=16, validation_fraction=0, seed=5, engine="numpy")
    again = pipelines.make_datasets("signs", x, y, batch_size=16, validation_fraction=0, seed=5, engine="numpy")
    # Asked for out of order (as a prefetching worker might), a batch is still the same batch.
    np.testing.assert_array_equal(data.train[3][0], again.train[3][0])
    np.testing.assert_array_equal(data.train[1][1], again.train[1][1])
    seen = np.concatenate([data.train[i][1] for i in range(len(data.train))])
    assert sorted(seen.tolist()) == sorted(y.tolist())  # every image once per epoch
    with pytest.raises(IndexError):
        data.train[len(data.train)]


def test_batches_cut_to_a_multiple_of_the_devices(pipelines, engine):
    """Data-parallel JAX needs every batch to divide among its devices (DevicePlan.batch_multiple)."""
    x, y = signs_like(42)
    data = pipelines.make_datasets("signs", x, y, batch_size=16, validation_fraction=0, engine=engine,
                                   batch_multiple=4, augment=False)
    assert [int(b[0].shape[0]) for b in data.train] == [16, 16, 8]  # 42 = 16 + 16 + 10 -> 8
    assert data.steps_per_epoch == 3
    three = pipelines.make_datasets("signs", x[:35], y[:35], batch_size=16, validation_fraction=0, engine=engine,
                                    batch_multiple=4)
    assert [int(b[0].shape[0]) for b in three.train] == [16, 16] and three.steps_per_epoch == 2  # 3 left: dropped
    evaluation = pipelines.make_eval_dataset(x[:18], batch_size=8, engine=engine, batch_multiple=4)
    assert [int(np.asarray(b).shape[0]) for b in evaluation] == [8, 8]


def test_augmentation_policies(pipelines):
    assert pipelines.augmentation_for("signs").horizontal_flip is False
    assert pipelines.augmentation_for("signs").max_zoom > 0
    for name in ("cifar10", "fer2013"):
        policy = pipelines.augmentation_for(name)
        assert policy.horizontal_flip and policy.max_shift > 0 and policy.max_zoom == 0


def _augment(pipelines, policy, images, engine):
    if engine == "numpy":
        return policy(images, 12)
    import tensorflow as tf

    from resnet_course.pipelines.tf_data import augment_tensor

    return augment_tensor(policy, tf.constant(images), tf.constant([1, 2])).numpy()


def test_shift_without_zoom_moves_whole_pixels(pipelines, engine):
    images = RNG.random((4, 32, 32, 3)).astype(np.float32)
    shifted = _augment(pipelines, pipelines.Augmentation(max_shift=0.125), images, engine)
    for source, result in zip(images, shifted):
        errors = {
            (dy, dx): np.abs(
                result[max(0, -dy):32 - max(0, dy), max(0, -dx):32 - max(0, dx)]
                - source[max(0, dy):32 + min(0, dy), max(0, dx):32 + min(0, dx)]
            ).max()
            for dy in range(-4, 5) for dx in range(-4, 5)
        }
        assert min(errors.values()) < 1e-5


def test_flip_mirrors_images(pipelines, engine):
    images = RNG.random((64, 8, 8, 1)).astype(np.float32)
    original = images.copy()
    flipped = _augment(pipelines, pipelines.Augmentation(horizontal_flip=True), images, engine)
    np.testing.assert_array_equal(images, original)  # the caller's batch is left alone
    mirrored = [np.array_equal(f, i[:, ::-1]) and not np.array_equal(f, i) for f, i in zip(flipped, images)]
    untouched = [np.array_equal(f, i) for f, i in zip(flipped, images)]
    assert all(m or u for m, u in zip(mirrored, untouched)) and 16 < sum(mirrored) < 48


def _window_corner(window, image):
    """Where ``window`` sits in ``image`` or its mirror: (mirrored, top, left), or None."""
    size = window.shape[0]
    for mirrored, source in ((False, image), (True, image[:, ::-1])):
        for top in range(image.shape[0] - size + 1):
            for left in range(image.shape[1] - size + 1):
                if np.array_equal(source[top:top + size, left:left + size], window):
                    return mirrored, top, left
    return None


def test_crop_cuts_random_windows_of_the_flipped_images(pipelines, engine):
    images = RNG.random((48, 12, 10, 2)).astype(np.float32)
    original = images.copy()
    policy = pipelines.Augmentation(horizontal_flip=True, crop=7)
    cropped = _augment(pipelines, policy, images, engine)
    np.testing.assert_array_equal(images, original)  # the caller's batch is left alone
    assert cropped.shape == (48, 7, 7, 2)
    corners = [_window_corner(window, image) for window, image in zip(cropped, images)]
    assert None not in corners  # every window is a whole-pixel window of the image or its mirror
    assert len({(top, left) for _, top, left in corners}) > 10  # drawn anew for each image
    assert {top for _, top, _ in corners} <= set(range(6)) and {left for _, _, left in corners} <= set(range(4))
    assert 10 < sum(mirrored for mirrored, _, _ in corners) < 38
    again = _augment(pipelines, policy, images, engine)
    np.testing.assert_array_equal(cropped, again)  # the same seed, the same windows


def test_crop_fits_the_images_or_fails_clearly(pipelines, engine):
    assert pipelines.Augmentation().is_identity and not pipelines.Augmentation(crop=4).is_identity
    with pytest.raises(ValueError, match="crop must be a window size"):
        pipelines.Augmentation(crop=-1)
    with pytest.raises(ValueError, match="crop must be a window size"):
        pipelines.Augmentation(crop=2.5)
    with pytest.raises(ValueError, match="a 9x9 crop does not fit in 8x12 images: use crop <= 8"):
        _augment(pipelines, pipelines.Augmentation(crop=9), RNG.random((2, 8, 12, 1)).astype(np.float32), engine)


def test_training_batches_are_crops_and_validation_whole_images(pipelines, engine):
    x, y = signs_like(40)
    policy = pipelines.Augmentation(max_shift=0.1, crop=48)
    data = pipelines.make_datasets("signs", x, y, batch_size=8, validation_fraction=0.3, augment=policy,
                                   engine=engine)
    assert _array(next(iter(data.train))[0]).shape == (8, 48, 48, 3)
    assert _array(next(iter(data.validation))[0]).shape[1:] == (64, 64, 3)
    assert _array(next(iter(data.eval_dataset(x[:4])))).shape == (4, 64, 64, 3)


def test_numpy_zoom_samples_like_tensorflow_crop_and_resize(pipelines):
    """The NumPy engine's shift-and-zoom resamples exactly where tf.image.crop_and_resize does
    with the boxes the tf.data engine draws (so both engines augment alike)."""
    tf = pytest.importorskip("tensorflow")
    from resnet_course.pipelines.augmentation import _shift_and_zoom

    images = RNG.random((3, 64, 64, 3)).astype(np.float32)
    shifts = np.array([[2.3, -1.7], [-6.2, 4.0], [0.0, 0.5]])
    scales = np.array([[1.08], [0.91], [1.0]])
    centres = 0.5 + shifts / 63
    boxes = np.concatenate([centres - 0.5 / scales, centres + 0.5 / scales], axis=1).astype(np.float32)
    expected = tf.image.crop_and_resize(images, boxes, np.arange(3), [64, 64], extrapolation_value=0.0)
    np.testing.assert_allclose(_shift_and_zoom(images, shifts, scales), expected.numpy(), atol=1e-4)


def test_standardisation_uses_training_statistics_and_validation_data(pipelines, engine):
    x, y = signs_like(30)
    x_val, y_val = signs_like(12)
    data = pipelines.make_datasets(
        "signs", x, y, batch_size=30, validation_data=(x_val, y_val), normalization="standardize",
        augment=False, engine=engine,
    )
    mean = x.reshape(-1, 3).mean(axis=0) / 255
    np.testing.assert_allclose(data.normalization.mean, mean, rtol=1e-6)
    images = _array(next(iter(data.train))[0])
    np.testing.assert_allclose(images.reshape(-1, 3).mean(axis=0), 0, atol=1e-4)
    assert data.train_size == 30 and len(data.x_val) == 12
    test_images = _array(next(iter(data.eval_dataset(x_val))))
    np.testing.assert_allclose(
        test_images, (x_val / 255 - np.array(data.normalization.mean)) / np.array(data.normalization.std),
        rtol=1e-4, atol=1e-5,
    )


def test_make_datasets_rejects_mismatched_arrays(pipelines):
    x, y = signs_like(12)
    with pytest.raises(ValueError, match=r"shape \(12, 64, 64, 3\), expected \(n, 32, 32, 3\)"):
        pipelines.make_datasets("cifar10", x, y)
    with pytest.raises(ValueError, match="labels must be class indices 0-5"):
        pipelines.make_datasets("signs", x, y + 1)
    with pytest.raises(ValueError, match="engine must be one of auto, tf.data, numpy"):
        pipelines.make_datasets("signs", x, y, engine="torch")
