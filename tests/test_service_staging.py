"""The client side of service mode without a cluster: URL shards, their tags, the per-shard books."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from tfeed import errors
from tfeed.service import staging
from tfeed.service.ledger import ShardLedger
from tfeed.service.staging import EpochStaging, RowOrder, StagingRoot, pack_tags, read_shard, shard_rows, unpack_tags
from tfeed.source.generator import NO_LABEL, LabelIndex, Selection


def _pairs(n):
    return lambda: ((f"http://127.0.0.1:1/img{i}.jpg?q=a b" if i == 7 else f"http://127.0.0.1:1/img{i}.jpg",
                     str(i % 5)) for i in range(n))


def _staged(directory, factory, selection=Selection(), labels=LabelIndex([str(i) for i in range(4)])):
    stage = EpochStaging(str(directory), factory, selection, labels)
    shards = stage.next_shards(0, wait_all=None)
    assert stage.done
    return stage, shards


def test_tags_round_trip_at_the_limits():
    rows = np.array([0, 1, 2**20 - 1])
    labels = np.array([NO_LABEL, 0, staging.MAX_CLASSES - 1])
    shards, back_rows, back_labels = unpack_tags(pack_tags(2**20 - 1, rows, labels))
    assert shards.tolist() == [2**20 - 1] * 3 and back_rows.tolist() == rows.tolist()
    assert back_labels.tolist() == labels.tolist()


def test_shards_grow_from_small_to_a_few_mb():
    sizes = [shard_rows(i) for i in range(80)]
    assert sizes[:8] == [256] * 8 and sizes[8] == 512 and max(sizes) == staging.MAX_ROWS
    assert sorted(sizes) == sizes


def test_every_selected_pair_is_staged_once_or_named(tmp_path):
    stage, shards = _staged(tmp_path / "epoch0", _pairs(3000))
    failures = stage.take_failures()
    # labels 0-3 are classes, "4" is not: one URL in five is invalid_label
    assert {f.reason for f in failures} == {errors.INVALID_LABEL}
    assert len(failures) == 600
    assert [stage.shard_length(s) for s, _ in shards] == [256] * 8 + [352]  # 2400 rows: 8 x 256 + the rest
    assert not [name for name in os.listdir(tmp_path / "epoch0") if ".partial" in name]
    seen = []
    for shard, path in shards:
        rows = read_shard(path)
        assert [row for row, _ in rows] == list(range(stage.shard_length(shard)))
        seen += [url for _, url in rows]
    expected = [url.replace(" ", "%20") for url, label in _pairs(3000)() if label != "4"]
    assert seen == expected  # source order, URLs normalised as the local pipeline does (a space encoded)


def test_rows_are_shuffled_while_staged_reproducibly_from_the_seed(tmp_path):
    """Each shard is a sample of the list (workers keep no shuffle buffer): a permutation of the
    selected rows, the same for the same seed (trainers sharing a job write the same shards)."""
    def staged_urls(name, seed, buffer_size=100_000):
        stage = EpochStaging(str(tmp_path / name), _pairs(3000), Selection(), None,
                             shuffle=RowOrder(seed, buffer_size))
        return [[url for _, url in read_shard(path)] for _, path in stage.next_shards(0, wait_all=None)]

    source = [url.replace(" ", "%20") for url, _ in _pairs(3000)()]
    first, again, other = staged_urls("a", 1), staged_urls("b", 1), staged_urls("c", 2)
    assert first == again and first != other
    rows = sum(first, [])
    assert sorted(rows) == sorted(source) and rows != source
    # the first shard draws from the whole list, not from its first 256 URLs
    assert max(source.index(url) for url in first[0]) > 2000
    windowed = sum(staged_urls("d", 1, buffer_size=64), [])
    assert sorted(windowed) == sorted(source) and windowed != source
    assert max(source.index(url) for url in windowed[:256]) < 256 + 64  # a buffer beyond: a window


def test_trainers_sharing_a_job_stage_the_same_shards_at_once(tmp_path):
    """Trainers sharing a job name write the same shard paths: neither may take the other's half-written file."""
    for _ in range(5):
        directory = tmp_path / f"round{_}"
        stages = [EpochStaging(str(directory), _pairs(6000), Selection(), None) for _ in range(4)]
        shard_lists = [stage.next_shards(0, wait_all=None) for stage in stages]
        assert all(shards == shard_lists[0] for shards in shard_lists)
        assert sorted(os.listdir(directory)) == [os.path.basename(path) for _, path in shard_lists[0]]
        assert sum(len(read_shard(path)) for _, path in shard_lists[0]) == 6000


def test_a_url_with_a_line_break_is_named_not_staged(tmp_path):
    factory = lambda: iter([("http://127.0.0.1:1/a.jpg", "0"), ("http://127.0.0.1:1/b\n.jpg", "0")])  # noqa: E731
    stage, shards = _staged(tmp_path / "e", factory)
    assert [f.reason for f in stage.take_failures()] == [errors.INVALID_URL]
    assert [url for _, url in read_shard(shards[0][1])] == ["http://127.0.0.1:1/a.jpg"]


def test_selection_shards_the_source_before_staging(tmp_path):
    _, shards = _staged(tmp_path / "e", _pairs(1000), Selection(num_shards=4, shard_index=1), None)
    urls = [url for _, path in shards for _, url in read_shard(path)]
    assert urls == [url for i, (url, _) in enumerate(_pairs(1000)()) if i % 4 == 1]


def test_an_error_reading_the_source_is_raised_on_the_reading_side(tmp_path):
    def broken():
        yield "http://127.0.0.1:1/a.jpg", None
        raise OSError("disk gone")

    stage = EpochStaging(str(tmp_path / "e"), broken, Selection(), None)
    with pytest.raises(OSError, match="disk gone"):
        stage.next_shards(0, wait_all=None)


def test_the_ledger_names_exactly_the_rows_that_did_not_arrive(tmp_path):
    stage, shards = _staged(tmp_path / "e", _pairs(1500), labels=None)
    ledger = ShardLedger()
    for shard, _ in shards:
        ledger.expect(shard, stage.shard_length(shard))
    all_rows = [(shard, row, url) for shard, path in shards for row, url in read_shard(path)]
    arrived = [item for i, item in enumerate(all_rows) if i % 10 != 3]
    ids = np.array([s for s, _, _ in arrived])
    rows = np.array([r for _, r, _ in arrived])
    assert ledger.arrived(ids, rows) == 0
    assert ledger.arrived(ids[:5], rows[:5]) == 5  # a second arrival is a duplicate, not a second count
    missing = [url for i, (_, _, url) in enumerate(all_rows) if i % 10 == 3]
    assert ledger.missing(shards) == len(missing) == 150
    assert list(ledger.missing_urls(shards)) == missing


def test_complete_shards_free_their_books(tmp_path):
    stage, shards = _staged(tmp_path / "e", _pairs(600), labels=None)
    ledger = ShardLedger()
    for shard, _ in shards:
        ledger.expect(shard, stage.shard_length(shard))
    ledger.arrived(np.zeros(256, np.int64), np.arange(256))
    ledger.arrived(np.ones(10, np.int64), np.arange(10))
    assert ledger.open_shards() == 1 and ledger.missing(shards) == 600 - 266


def test_an_epoch_removes_its_root_and_a_lost_owner_removes_what_is_left(tmp_path):
    root = StagingRoot(str(tmp_path))
    stage = EpochStaging(root.epoch_dir(0), _pairs(300), Selection(), None, owned=root.path)
    stage.next_shards(0, wait_all=None)
    assert os.listdir(root.path) == ["epoch0"]
    stage.remove()
    assert os.listdir(tmp_path) == []
    _staged(root.epoch_dir(1), _pairs(300), labels=None)  # an epoch that did not clean up (a crash)
    del root
    gc.collect()
    assert os.listdir(tmp_path) == []
