"""tfeed.datasets: the seed's NetworkImages example class, and ILSVRC12 on a tiny nginx mirror."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

import tfeed
from tfeed.datasets import ILSVRC12, NetworkImages
from tfeed.testing import ImageServer, NginxServer, encode, sample_photos, write_images

LATENCY = 0.2


@pytest.fixture(scope="module")
def photos():
    """Five real photos, served as PNG so decoded pixels can be compared exactly."""
    chosen = sorted(sample_photos().items())[:5]
    return {f"{name}.png": image for name, image in chosen}


@pytest.fixture(scope="module")
def photo_server(photos):
    files = {name: encode(image, "png") for name, image in photos.items()}
    files["broken.jpg"] = b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20
    with ImageServer(files, latency=LATENCY) as server:
        yield server


@pytest.fixture(scope="module")
def seed_example(photo_server, photos):
    """The seed README's example class, with its five URLs served locally."""
    names = sorted(photos)

    class NetworkImagesImple(NetworkImages):
        def __init__(self, shuffle=False):
            super(NetworkImagesImple, self).__init__(shuffle)
            self.datapoints = [[photo_server.url(name), label] for label, name in enumerate(names)]

    return NetworkImagesImple, [photos[name] for name in names]


def test_seed_example_yields_bgr_images_in_order(seed_example):
    cls, originals = seed_example
    ds = cls()
    ds.reset_state()
    assert ds.size() == len(ds) == 5
    datapoints = list(ds.get_data())
    assert [dp[1] for dp in datapoints] == [0, 1, 2, 3, 4]
    for (image, label) in datapoints:
        assert image.dtype == np.uint8
        np.testing.assert_array_equal(image, cv2.cvtColor(originals[label], cv2.COLOR_RGB2BGR))
    assert ds.stats.snapshot()["delivered"] == 5


def test_get_data_fetches_concurrently(seed_example):
    cls, _ = seed_example
    start = time.perf_counter()
    assert len(list(cls().get_data())) == 5
    elapsed = time.perf_counter() - start
    assert elapsed < 4 * LATENCY, f"5 URLs at {LATENCY} s each took {elapsed:.2f} s: not concurrent"


def test_shuffle_partitioning_parallel(seed_example):
    cls, _ = seed_example
    shuffled = cls(shuffle=True)
    shuffled.seed = 3
    shuffled.reset_state()
    first, second = [[dp[1] for dp in shuffled.get_data()] for _ in range(2)]
    assert sorted(first) == sorted(second) == [0, 1, 2, 3, 4]
    assert first != second  # a new order on every pass

    assert [dp[1] for dp in cls().partitioning(2, 1).get_data()] == [1, 3]
    assert [dp[1] for dp in cls().partitioning(3, 2).get_data()] == [2]
    with pytest.raises(ValueError, match="partition_index"):
        cls().partitioning(2, 2)

    parallel = cls().partitioning(2, 0).parallel(num_threads=3, buffer_size=3)
    parallel.reset_state()
    assert parallel.size() == 3
    assert sorted(dp[1] for dp in parallel.get_data()) == [0, 2, 4]


def test_failures_are_skipped_and_counted(photo_server):
    class Mixed(NetworkImages):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.datapoints = [[photo_server.url("astronaut.png"), 0, "extra"],
                               [photo_server.url("missing.png"), 1, "x"],
                               [photo_server.url("broken.jpg"), 2, "y"]]

    ds = Mixed()
    datapoints = list(ds.get_data())
    assert [(dp[1], dp[2]) for dp in datapoints] == [(0, "extra")]
    snapshot = ds.stats.snapshot()
    assert snapshot["failures"] == {"http_404": 1, "decode_error": 1}
    with pytest.raises(tfeed.FetchError, match="http_404"):
        list(Mixed(on_error="raise").get_data())


def test_to_dataset(seed_example):
    cls, _ = seed_example
    ds = cls().to_dataset(image_size=(32, 32), batch_size=5, seed=0)
    assert ds.class_names == ["0", "1", "2", "3", "4"]
    images, labels = next(iter(ds))
    assert images.shape == (5, 32, 32, 3) and sorted(labels.numpy().tolist()) == [0, 1, 2, 3, 4]


# -- ILSVRC12 ------------------------------------------------------------------------
SYNSETS = [("n01440764", "tench, Tinca tinca"), ("n01443537", "goldfish, Carassius auratus"),
           ("n01484850", "great white shark, white shark, man-eater")]
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]  # RGB, one per class
VAL_LABELS = [2, 0, 1, 1, 0, 2]


def _image(label, rng):
    size = (int(rng.integers(40, 80)), int(rng.integers(40, 80)), 3)
    image = np.clip(np.array(COLOURS[label]) + rng.normal(0, 6, size), 0, 255).astype(np.uint8)
    return encode(image, "jpeg")


def build_mirror(root, with_train_list=True):
    """A three-synset ILSVRC/Kaggle layout: 3 train images per class (2 with boxes), 6 val images."""
    rng = np.random.default_rng(0)
    files = {"LOC_synset_mapping.txt": "".join(f"{w} {t}\n" for w, t in SYNSETS).encode()}
    train_list, train_rows = [], ["ImageId,PredictionString"]
    for label, (wnid, _) in enumerate(SYNSETS):
        for i in range(1, 4):
            image_id = f"{wnid}_{i}"
            files[f"ILSVRC/Data/CLS-LOC/train/{wnid}/{image_id}.JPEG"] = _image(label, rng)
            train_list.append(f"{wnid}/{image_id} {len(train_list) + 1}")
            if i < 3:
                train_rows.append(f"{image_id},{wnid} 1 2 30 40 ")
    val_rows = ["ImageId,PredictionString"]
    for i, label in reversed(list(enumerate(VAL_LABELS, 1))):  # the CSV is not in id order
        image_id = f"ILSVRC2012_val_{i:08d}"
        files[f"ILSVRC/Data/CLS-LOC/val/{image_id}.JPEG"] = _image(label, rng)
        wnid = SYNSETS[label][0]
        val_rows.append(f"{image_id},{wnid} 10 10 50 50 {wnid} 5 5 20 20")
    files["LOC_train_solution.csv"] = ("\n".join(train_rows) + "\n").encode()
    files["LOC_val_solution.csv"] = ("\n".join(val_rows) + "\n").encode()
    if with_train_list:
        files["ILSVRC/ImageSets/CLS-LOC/train_cls.txt"] = ("\n".join(train_list) + "\n").encode()
    write_images(files, root)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet-mirror")
    build_mirror(root / "full")
    build_mirror(root / "kaggle", with_train_list=False)
    with NginxServer(root) as server:
        yield server


def _nearest_class(bgr_image):
    mean = bgr_image.reshape(-1, 3).mean(axis=0)[::-1]
    return int(np.argmin([np.abs(mean - np.array(colour)).sum() for colour in COLOURS]))


def test_ilsvrc12_val_from_mirror(mirror):
    ds = ILSVRC12(mirror.url("full"), "val")
    assert ds.class_names == [wnid for wnid, _ in SYNSETS]
    assert ds.descriptions[0] == "tench, Tinca tinca"
    assert ds.shuffle is False and ds.size() == len(VAL_LABELS)
    assert [dp[0].rsplit("/", 1)[1] for dp in ds.datapoints][:2] == ["ILSVRC2012_val_00000001.JPEG",
                                                                     "ILSVRC2012_val_00000002.JPEG"]
    assert [dp[1] for dp in ds.datapoints] == VAL_LABELS
    assert ds.pairs()[0] == (ds.datapoints[0][0], SYNSETS[VAL_LABELS[0]][0])
    got = [(label, _nearest_class(image)) for image, label in ds.parallel(num_threads=4).get_data()]
    assert sorted(got) == sorted((label, label) for label in VAL_LABELS)


def test_ilsvrc12_train_to_dataset(mirror):
    ds = ILSVRC12(mirror.url("full"), "train", seed=0)
    assert ds.shuffle is True and ds.size() == 9
    dataset = ds.to_dataset(image_size=(24, 24), batch_size=None)
    assert dataset.class_names == [wnid for wnid, _ in SYNSETS]
    seen = []
    for image, label in dataset:
        bgr = image.numpy()[..., ::-1]
        seen.append((int(label), _nearest_class(bgr)))
    assert len(seen) == 9 and all(label == colour for label, colour in seen)


def test_ilsvrc12_kaggle_layout_without_train_list(mirror):
    ds = ILSVRC12(mirror.url("kaggle"), "train", shuffle=False)
    assert ds.size() == 6  # only the images with boxes
    assert [dp[1] for dp in ds.datapoints] == [0, 0, 1, 1, 2, 2]


def test_ilsvrc12_errors(mirror):
    with pytest.raises(ValueError, match="split"):
        ILSVRC12(mirror.url("full"), "test")
    with pytest.raises(FileNotFoundError, match="LOC_synset_mapping.txt"):
        ILSVRC12(mirror.url("nowhere"), "val")
