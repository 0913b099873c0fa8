"""Tasks: splits, batching by index on the device, binarisation, the IDX
reader and the MNIST-style loaders, the strategies generator, option errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from models import tasks
from models.tasks import images, strategies
from models.tasks.idx import read_idx, write_idx


@pytest.fixture(scope="module")
def digits():
    return tasks.load("digits", seed=0, binarize="dynamic")


def test_names_and_default():
    assert tasks.names() == ["digits", "fashion_mnist", "mnist", "mnist5k", "strategies", "toy"]


def test_digits_splits_fixed_by_seed_and_disjoint():
    a, b, c = (tasks.load("digits", seed=s, binarize="static") for s in (0, 0, 1))
    assert a.size("train") + a.size("val") + a.size("test") == 1797
    assert torch.equal(a.split("val").x, b.split("val").x)
    assert not torch.equal(a.split("val").c, c.split("val").c)
    assert a.spec == {"n_pixels": 64, "shape": (8, 8), "n_classes": 10,
                      "binarize": "static", "class_names": tuple("0123456789")}


def test_digits_read_directly_equal_sklearn_loader_without_importing_it():
    import subprocess
    import sys

    from sklearn.datasets import load_digits
    grey, target = images.read_sklearn_digits()
    d = load_digits()
    assert np.array_equal(grey, d.data) and np.array_equal(target, d.target)
    # the point of reading the file: a job process never pays for sklearn and scipy
    code = ("import sys; from models import tasks; tasks.load('digits'); "
            "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_digits_sample_by_generator_is_reproducible(digits):
    b1 = digits.sample("train", 32, digits.generator(5))
    b2 = digits.sample("train", 32, digits.generator(5))
    assert b1.x.shape == (32, 64) and b1.c.shape == (32,) and b1.truth is None
    assert torch.equal(b1.x, b2.x) and torch.equal(b1.c, b2.c)
    assert set(b1.x.unique().tolist()) <= {0.0, 1.0}


def test_dynamic_binarisation_resamples_but_split_is_fixed(digits):
    g = digits.generator(0)
    # the same rows drawn twice get different pixels with dynamic binarisation
    raw = digits._raw("train")
    idx = torch.arange(64)
    x1 = images._bernoulli(raw.index(idx), g).x
    x2 = images._bernoulli(raw.index(idx), g).x
    assert not torch.equal(x1, x2)
    assert torch.equal(digits.split("val").x, digits.split("val").x)
    # a fresh Bernoulli draw has the grey level as its mean
    many = images._bernoulli(raw.index(idx.repeat(400)), g).x.view(400, 64, 64).mean(0)
    assert (many - raw.index(idx).x).abs().max() < 0.12


def test_static_threshold_vs_seeded_sample():
    t = tasks.load("digits", binarize="static", threshold=0.5)
    s0 = tasks.load("digits", binarize="static", threshold=None, seed=0)
    s1 = tasks.load("digits", binarize="static", threshold=None, seed=0)
    assert torch.equal(s0.split("train").x, s1.split("train").x)
    assert not torch.equal(t.split("train").x, s0.split("train").x)


@pytest.mark.parametrize("bad, key", [({"binarize": "otsu"}, "binarize"),
                                      ({"threshold": 2.0}, "threshold"),
                                      ({"colour": 1}, "colour")])
def test_bad_options_name_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        tasks.load("digits", **bad)


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="strategies"):
        tasks.load("cifar")


def test_unknown_split():
    with pytest.raises(ValueError, match="valid splits"):
        tasks.load("toy").sample("dev", 2)


# -- IDX --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, name, dtype):
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5)
    arr = (arr % 256 if dtype == np.uint8 else arr * 1.5 if np.issubdtype(dtype, np.floating) else arr).astype(dtype)
    path = write_idx(tmp_path / name, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape and np.array_equal(back, arr)


def test_idx_header_is_the_standard_one(tmp_path):
    path = write_idx(tmp_path / "l", np.array([7, 2, 1], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


def test_idx_rejects_truncated(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match="shape"):
        read_idx(path)


def _write_mnist(folder, n_train=30, n_test=10, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        img, lab = images.IDX_FILES[split]
        arrays[img] = rng.integers(0, 256, (n, 4, 3), dtype=np.uint8)
        arrays[lab] = rng.integers(0, 10, n, dtype=np.uint8)
    for stem, arr in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arr)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_loader_reads_idx(tmp_path, gz, name):
    arrays = _write_mnist(tmp_path / name, gz=gz)
    task = tasks.load(name, data_dir=str(tmp_path / name), val_size=5, binarize="static", threshold=0.5)
    assert task.spec["n_pixels"] == 12 and task.spec["shape"] == (4, 3)
    assert (task.size("train"), task.size("val"), task.size("test")) == (25, 5, 10)
    test = task.split("test")
    want = torch.tensor(arrays["t10k-images-idx3-ubyte"].reshape(10, 12) / 255.0 > 0.5).float()
    assert torch.equal(test.x, want)
    assert torch.equal(test.c, torch.tensor(arrays["t10k-labels-idx1-ubyte"], dtype=torch.long))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_validates_on_t10k_by_default(tmp_path, name):
    """Without task.val_size the whole training file trains and the t10k files
    are the held-out split; a training file smaller than 10,000 images loads."""
    arrays = _write_mnist(tmp_path / name, n_train=30, n_test=10)
    task = tasks.load(name, data_dir=str(tmp_path / name), binarize="static", threshold=0.5)
    assert (task.size("train"), task.size("val"), task.size("test")) == (30, 10, 10)
    assert torch.equal(task.split("val").x, task.split("test").x)
    want = torch.tensor(arrays["t10k-images-idx3-ubyte"].reshape(10, 12) / 255.0 > 0.5).float()
    assert torch.equal(task.split("val").x, want)


def test_mnist_missing_files_message_names_files_and_folder(tmp_path):
    folder = tmp_path / "mnist"
    _write_mnist(folder)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as err:
        tasks.load("mnist", data_dir=str(folder))
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte" in msg and str(folder.resolve()) in msg
    assert "['t10k-labels-idx1-ubyte']" in msg          # only the missing one is listed as missing
    assert "data_dir" in msg and ".gz" in msg


# -- strategies ----------------------------------------------------------------

def test_strategies_transformations_by_hand():
    s = torch.tensor([[3, 1, 2, 0]])
    V = 5
    expect = {"copy": [3, 1, 2, 0], "reverse": [0, 2, 1, 3], "sort": [0, 1, 2, 3],
              "rotate": [1, 2, 0, 3], "add_one": [4, 2, 3, 1], "sort_desc": [3, 2, 1, 0],
              "swap_pairs": [1, 3, 0, 2], "complement": [1, 3, 2, 4]}
    assert set(expect) == set(strategies.TRANSFORMS)
    for name, want in expect.items():
        assert strategies.TRANSFORMS[name](s, V).tolist() == [want], name


def test_strategies_generator_applies_the_claimed_transformation():
    task = tasks.load("strategies", length=6, vocab=7, strategies=5, n_train=400, seed=3)
    spec = task.spec
    assert spec["strategies"] == ["copy", "reverse", "sort", "rotate", "add_one"]
    off = len(strategies.SPECIALS)
    batch = task.split("train")
    ctx, tgt = batch.c - off, batch.x - off
    assert ctx.min() >= 0 and ctx.max() < 7 and batch.c.shape == (400, 6)
    for k, name in enumerate(spec["strategies"]):
        rows = batch.truth == k
        assert rows.sum() > 40        # every strategy is used
        assert torch.equal(tgt[rows], strategies.TRANSFORMS[name](ctx[rows], 7)), name
    assert spec["vocab_size"] == off + 7 and spec["specials"]["<bos>"] == 1


def test_strategies_by_name_and_errors():
    task = tasks.load("strategies", strategies=["reverse", "complement"], n_train=10, n_val=2, n_test=2)
    assert task.spec["n_strategies"] == 2
    with pytest.raises(ValueError, match="strategies"):
        tasks.load("strategies", strategies=["reverse", "shuffle"])
    with pytest.raises(ValueError, match="length"):
        tasks.load("strategies", length=1)


def test_toy_task():
    task = tasks.load("toy", t=0.499, D=3)
    assert task.spec == {"t": 0.499, "D": 3}
    assert task.sample("train", 7).size == 7
    with pytest.raises(ValueError, match="t="):
        tasks.load("toy", t=1.5)


def test_fashion_mnist_defaults_to_debians_folder(tmp_path):
    """With no task.data_dir the loader reads Debian's dataset-fashion-mnist
    folder; when it is missing, the message names the key and the install command."""
    assert tasks.options("fashion_mnist")["data_dir"] == "/usr/share/datasets/fashion-mnist"
    with pytest.raises(FileNotFoundError) as e:
        tasks.load("fashion_mnist", data_dir=str(tmp_path / "absent"))
    msg = str(e.value)
    assert "task.data_dir" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "absent") in msg and "\n" not in msg


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (CI installs it)")
def test_fashion_mnist_loads_in_full_from_the_package():
    task = tasks.load("fashion_mnist")
    assert task.size("train") == 60000 and task.size("test") == 10000
    assert task.spec["shape"] == (28, 28) and task.spec["n_classes"] == 10
