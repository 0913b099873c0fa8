"""Every way an IDX data file can be broken (a half-finished download, an HTML
error page saved as .gz, the wrong file in the folder) raises ValueError
naming the file and what was expected, never an anonymous EOFError."""

import gzip
import re

import numpy as np
import pytest

from models import tasks
from models.tasks import images
from models.tasks.idx import read_idx, write_idx

ARR = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)


def _raises(path, *words):
    with pytest.raises(ValueError) as info:
        read_idx(path)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert re.search(w, msg), (w, msg)
    assert not isinstance(info.value.__cause__, EOFError)   # no anonymous chained error
    return msg


def test_truncated_plain(tmp_path):
    path = write_idx(tmp_path / "a-idx3-ubyte", ARR)
    path.write_bytes(path.read_bytes()[:-5])
    _raises(path, "truncated", r"\(2, 3, 4\)", "24 bytes", "19")


def test_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "a-idx3-ubyte.gz", ARR)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    _raises(path, "gzip", "truncated", "expected a complete gzipped IDX")


def test_gzip_of_a_truncated_idx(tmp_path):
    path = tmp_path / "a-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(write_idx(tmp_path / "plain", ARR).read_bytes()[:-1]))
    _raises(path, "after gunzip", "truncated", "24 bytes")


def test_truncated_header(tmp_path):
    path = tmp_path / "h"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    _raises(path, "truncated header", "expected 16")


def test_wrong_magic(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"<html>not found</html>")
    _raises(path, "not an IDX file", "magic number")


def test_unknown_type_byte(tmp_path):
    path = tmp_path / "t"
    path.write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]))
    _raises(path, "type byte 0x42", "0x08")


def test_named_gz_but_not_gzip(tmp_path):
    path = tmp_path / "a-idx3-ubyte.gz"
    path.write_bytes(b"<!DOCTYPE html> 404")
    _raises(path, "not gzip-compressed", "magic number")


def test_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "x", ARR)
    path.write_bytes(path.read_bytes() + b"\0\0")
    _raises(path, "trailing bytes", "26")


def _mnist(folder, train_images=None, train_labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (8, 4, 3), dtype=np.uint8),
             "train-labels-idx1-ubyte": rng.integers(0, 10, 8, dtype=np.uint8),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8)}
    if train_images is not None:
        files["train-images-idx3-ubyte"] = train_images
    if train_labels is not None:
        files["train-labels-idx1-ubyte"] = train_labels
    for stem, arr in files.items():
        write_idx(folder / stem, arr)
    return folder


@pytest.mark.parametrize("bad, words", [
    (dict(train_images=np.zeros((8, 12), np.uint8)), ("train-images-idx3-ubyte", r"\(N, H, W\)")),
    (dict(train_labels=np.zeros((8, 2), np.uint8)), ("train-labels-idx1-ubyte", r"\(N,\)")),
    (dict(train_labels=np.zeros(7, np.uint8)), ("8 images", "7 labels", "same N")),
])
def test_wrong_shape_names_the_file(tmp_path, bad, words):
    folder = _mnist(tmp_path / "mnist", **bad)
    with pytest.raises(ValueError) as info:
        images.read_mnist_dir(folder, "mnist")
    msg = str(info.value)
    assert str(folder) in msg
    for w in words:
        assert re.search(w, msg), (w, msg)


def test_loader_passes_the_file_error_through(tmp_path):
    folder = _mnist(tmp_path / "mnist")
    lab = folder / "t10k-labels-idx1-ubyte"
    lab.write_bytes(lab.read_bytes()[:-1])
    with pytest.raises(ValueError, match=re.escape(str(lab))):
        tasks.load("mnist", data_dir=str(folder), val_size=2)
