"""WebDataset shards: the folder's tensors, each sample once per epoch across ranks and
workers, evaluation over the whole split exactly once, bad shards named or skipped, a split's
first examples held in memory for the report."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from attnlab.data.shard_writer import write_shards
from attnlab.data.shards import ShardStream, read_samples, write_split
from attnlab.data.vision import load_image_folder_task
from attnlab.errors import DataError


def _folder(root: Path, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cat"):
        (root / c).mkdir(parents=True)
        for k in range(per_class):
            shape = (8, 8, 3) if k % 2 else (8, 8)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{k:02d}.png")
    return root


def _key_shards(tmp: Path, sizes: list[int]) -> list[tuple[str, int]]:
    """Shards of samples that hold only their own number, ``n.txt``."""
    shards, n = [], 0
    for s, size in enumerate(sizes):
        entries = write_split(tmp, f"s{s}", ((f"{n + i:06d}", {"txt": str(n + i).encode()}) for i in range(size)), size)
        shards.append((str(tmp / entries[0]["file"]), size))
        n += size
    return shards


def _key(sample, where):
    return int(sample["txt"])


def test_shards_give_the_folder_tensors(tmp_path):
    root = _folder(tmp_path / "f")
    write_shards(root, tmp_path / "s", shard_size=5, options={"image_size": (8, 8)})
    shards = load_image_folder_task(tmp_path / "s")
    folder = load_image_folder_task(root, image_size=(8, 8), lazy=True)
    assert shards.spec == folder.spec and shards.class_names == folder.class_names
    for streamed, listed in ((shards.val, folder.val), (shards.test, folder.test)):
        items = list(streamed.evaluation_view())
        assert len(items) == len(listed) == len(streamed)
        for k, (x, y) in enumerate(items):  # val / test are written in the folder's order
            xf, yf = listed[k]
            assert torch.equal(x, xf) and int(y) == int(yf)
    by_label = Counter(int(y) for _, y in shards.train.evaluation_view())
    assert by_label == Counter(folder.train.y.tolist())
    train_x = torch.stack([x for x, _ in shards.train.evaluation_view()])
    folder_x = torch.stack([folder.train[i][0] for i in range(len(folder.train))])
    # the same images, in the write-time shuffled order: equal as sorted sets of rows
    assert torch.equal(train_x.flatten(1).sort(0).values, folder_x.flatten(1).sort(0).values)


@pytest.mark.parametrize("world,workers,batch", [(1, 1, 4), (2, 2, 3), (3, 2, 5), (2, 1, 1)])
def test_each_sample_at_most_once_per_epoch_and_ranks_agree(tmp_path, world, workers, batch):
    shards = _key_shards(tmp_path, [7, 3, 11, 1, 9])  # 31 samples, uneven shards
    total = 31
    seen, per_rank = [], []
    for rank in range(world):
        stream = ShardStream(shards, _key, shuffle=True, buffer=4, seed=3)
        stream.set_distributed(rank, world, batch)
        stream.set_epoch(1)
        batches = list(DataLoader(stream, batch_size=batch, drop_last=True, num_workers=workers))
        assert len(batches) == stream.num_batches(batch)
        per_rank.append(len(batches))
        seen += torch.cat(batches).tolist()
    assert len(set(per_rank)) == 1  # DDP needs the same number of steps on every rank
    assert len(seen) == len(set(seen))  # nothing twice
    full = world * ((total // world) // batch) * batch
    assert len(seen) == full and total - full < world * batch  # dropped: less than one batch per rank


def test_epochs_differ_in_order_but_replay_exactly(tmp_path):
    shards = _key_shards(tmp_path, [5, 5, 5, 5])
    stream = ShardStream(shards, _key, shuffle=True, buffer=3, seed=0)
    orders = []
    for epoch in (0, 1, 0):
        stream.set_epoch(epoch)
        orders.append(list(stream))
    assert orders[0] == orders[2] and orders[0] != orders[1]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(20))


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_evaluation_counts_every_example_exactly_once(tmp_path, workers):
    shards = _key_shards(tmp_path, [4, 7, 2])
    stream = ShardStream(shards, _key, shuffle=True, seed=0)
    stream.set_distributed(1, 2, 4)  # a training rank's view must not leak into evaluation
    view = stream.evaluation_view()
    got = torch.cat(list(DataLoader(view, batch_size=5, num_workers=workers))).tolist()
    assert sorted(got) == list(range(13))
    if workers == 0:
        assert got == list(range(13))  # listed order


def test_read_samples_skips_without_decoding(tmp_path):
    shards = _key_shards(tmp_path, [6])
    keys = [k for k, _ in read_samples(shards[0][0], skip=4)]
    assert keys == ["000004", "000005"]


def _truncate(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2 + 100])


def test_truncated_shard_is_named_or_skipped_and_counted(tmp_path):
    shards = _key_shards(tmp_path, [6, 6, 6])
    _truncate(shards[1][0])
    with pytest.raises(DataError, match=Path(shards[1][0]).name):
        list(ShardStream(shards, _key))
    stream = ShardStream(shards, _key, skip_bad=True)
    got = list(DataLoader(stream, batch_size=None, num_workers=2))
    assert set(range(6)) | set(range(12, 18)) <= set(got) and len(got) < 18
    assert stream.skipped == 18 - len(got) > 0  # counted across worker processes


def _rewrite_first(tar: Path, suffix: str, change) -> str:
    """Rewrite a shard with its first member ending in ``suffix`` replaced by ``change(bytes)``; its name."""
    import io

    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    victim = next(m.name for m, _ in members if m.name.endswith(suffix))
    with tarfile.open(tar, "w") as t:
        for m, data in members:
            data = change(data) if m.name == victim else data
            m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    return victim


def test_bad_sample_is_named_or_skipped(tmp_path):
    root = _folder(tmp_path / "f", per_class=4)
    write_shards(root, tmp_path / "s", shard_size=100, options={"image_size": (8, 8), "val_fraction": 0, "test_fraction": 0})
    victim = _rewrite_first(tmp_path / "s" / "train-000000.tar", ".png", lambda data: data[:30])
    task = load_image_folder_task(tmp_path / "s")
    with pytest.raises(DataError, match=victim.split(".")[0]):
        list(task.train.evaluation_view())
    task = load_image_folder_task(tmp_path / "s", skip_bad=True)
    assert len(list(task.train.evaluation_view())) == 11 and task.train.skipped == 1


def test_a_class_index_past_the_shards_classes_is_named(tmp_path):
    """A `.cls` past the shards' class list reached the loss as torch's "Target out of bounds" (or, below the
    model's outputs, trained silently on a class the shards do not list); it is one line naming the sample."""
    root = _folder(tmp_path / "f", per_class=4)
    write_shards(root, tmp_path / "s", shard_size=100, options={"image_size": (8, 8), "val_fraction": 0, "test_fraction": 0})
    victim = _rewrite_first(tmp_path / "s" / "train-000000.tar", ".cls", lambda data: b"7")
    task = load_image_folder_task(tmp_path / "s")
    with pytest.raises(DataError, match=victim.split(".")[0] + r".*\.cls 7 is past the shards' 3 classes"):
        list(task.train.evaluation_view())


def test_pickle_members_are_refused(tmp_path):
    write_split(tmp_path, "p", iter([("000000", {"pyd": b"\x80\x04K\x01.", "cls": b"0"})]), 10)
    with pytest.raises(DataError, match="pickle"):
        list(read_samples(tmp_path / "p-000000.tar"))


def test_text_shards_give_the_file_loaders_ids(tmp_path):
    from attnlab.data.text import load_text_classification

    rows = ["pos\tgood movie great fun", "neg\tbad boring film", "pos\tloved it a lot", "neg\tterrible acting, dull"]
    src = tmp_path / "t.tsv"
    src.write_text("\n".join(f"{r} {i}" for i in range(12) for r in rows) + "\n")
    options = {"tokenizer": "word", "lowercase": True}
    index = write_shards(src, tmp_path / "s", task="text-classification", shard_size=7, options=options)
    assert index["sizes"] == {"train": 40, "val": 4, "test": 4}  # 10% of each class of 24
    listed = load_text_classification(str(src), seed=0, **options)
    streamed = load_text_classification(str(tmp_path / "s"), seed=0)
    assert streamed.class_names == listed.class_names and streamed.info["max_length"] == listed.info["max_length"]
    for a, b in ((listed.val, streamed.val), (listed.test, streamed.test)):
        items = list(b.evaluation_view())
        assert len(items) == len(a) > 0
        for i, (ids, y) in enumerate(items):
            assert torch.equal(ids, a[i][0]) and int(y) == int(a[i][1])
    x, y = streamed.collate_fn(items[:3])
    assert x.shape[0] == 3 and y.tolist() == [int(v) for v in listed.test.y[:3]]


def test_persistent_workers_see_each_new_epoch(tmp_path):
    """Persistent workers hold their own copy of the stream: the epoch must still reach them."""
    stream = ShardStream(_key_shards(tmp_path, [8, 8, 8]), _key, shuffle=True, buffer=4, seed=0)
    loader = DataLoader(stream, batch_size=None, num_workers=1, persistent_workers=True)
    orders = []
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        orders.append(list(loader))
    single = []
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        single.append(list(stream))
    assert orders == single and orders[0] != orders[1]


def test_balanced_class_weights_count_a_streams_labels(tmp_path):
    from attnlab.training.class_weights import training_labels

    root = _folder(tmp_path / "f", per_class=6)
    (root / "cat" / "00.png").unlink()  # classes of 6, 6, 5
    write_shards(root, tmp_path / "s", shard_size=4, options={"image_size": (8, 8), "val_fraction": 0, "test_fraction": 0})
    stream = load_image_folder_task(tmp_path / "s").train
    labels = training_labels(stream)
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 6 + [2] * 5
    assert labels.tolist() == [int(y) for _, y in stream.evaluation_view()]


def test_a_text_streams_first_examples_in_memory_keep_their_texts(tmp_path):
    """What report.html shows of a streamed text test split: its first examples, as the
    in-memory loader holds them (ids, labels, texts), reading no more samples than that."""
    from attnlab.data.shards import with_test_in_memory
    from attnlab.data.text import TokenClassificationDataset, load_text_classification

    rows = ["pos\tgood movie great fun", "neg\tbad boring film", "pos\tloved it a lot", "neg\tterrible acting, dull"]
    src = tmp_path / "t.tsv"
    src.write_text("\n".join(f"{r} {i}" for i in range(30) for r in rows) + "\n")
    write_shards(src, tmp_path / "s", task="text-classification", shard_size=4, options={"tokenizer": "word"})
    listed = load_text_classification(str(src), seed=0, tokenizer="word")
    streamed = load_text_classification(str(tmp_path / "s"), seed=0)
    assert len(streamed.test) == len(listed.test) == 12
    read = []
    decode = streamed.test.decode
    streamed.test.decode = lambda sample, where: read.append(where) or decode(sample, where)
    streamed.test.decode.in_memory = decode.in_memory
    shown = with_test_in_memory(streamed, 5)
    assert len(read) == 5  # five samples read and decoded, not the split
    test = shown.test
    assert isinstance(test, TokenClassificationDataset) and len(test) == 5
    assert test.texts == listed.test.texts[:5] and test.y.tolist() == listed.test.y[:5].tolist()
    assert all(torch.equal(test.ids[i], listed.test.ids[i]) for i in range(5))
    assert shown.train is streamed.train and shown.val is streamed.val  # only the test split is held


def test_an_image_streams_first_examples_in_memory_are_stacked(tmp_path):
    from attnlab.data.shards import with_test_in_memory

    root = _folder(tmp_path / "f", per_class=20)  # a test split of 2 per class
    write_shards(root, tmp_path / "s", shard_size=2, options={"image_size": (8, 8)})
    folder, streamed = load_image_folder_task(root, image_size=(8, 8)), load_image_folder_task(tmp_path / "s")
    shown = with_test_in_memory(streamed, 4)
    assert len(shown.test) == 4
    for i in range(4):
        assert torch.equal(shown.test[i][0], folder.test[i][0]) and int(shown.test[i][1]) == int(folder.test[i][1])
    assert with_test_in_memory(streamed, 0) is None  # nothing to show


def test_a_finished_runs_classes_in_another_order_relabel_a_streams_labels_and_counts(tmp_path):
    """Image shards read for a run whose class list orders the same classes otherwise: every
    decoded label and the labels `--train.class_weights balanced` counts are the run's indices."""
    from attnlab.training.class_weights import training_labels

    root = _folder(tmp_path / "f", per_class=6)
    (root / "cat" / "00.png").unlink()  # classes of 6, 6, 5
    write_shards(root, tmp_path / "s", shard_size=4, options={"image_size": (8, 8), "val_fraction": 0, "test_fraction": 0})
    ours = load_image_folder_task(tmp_path / "s")
    theirs = load_image_folder_task(tmp_path / "s", class_names=ours.class_names[::-1])
    assert theirs.class_names == ours.class_names[::-1] and theirs.num_classes == 3
    flip = [2 - int(y) for _, y in ours.train.evaluation_view()]
    assert [int(y) for _, y in theirs.train.evaluation_view()] == flip
    assert training_labels(theirs.train).tolist() == flip
    with pytest.raises(DataError, match=r"the run has no class 'ant' \(its classes: \['bee', 'cat', 'dog'\]\)"):
        load_image_folder_task(tmp_path / "s", class_names=["bee", "cat", "dog"])
