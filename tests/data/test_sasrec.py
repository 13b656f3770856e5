"""Sequential-recommendation data: reader, id maps, leave-one-out split, negatives, loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.tasks import TASKS, load_task
from attnlab.data.sasrec import (
    leave_one_out,
    load_sasrec_task,
    pad_left,
    read_interactions,
    sample_negatives,
)
from attnlab.errors import ConfigError, DataError

# Users interleave; ids are strings, numeric so remapped in numeric (not file) order.
TINY = """\
7 30
2 10
7 20
2 30

7 10
2 40
7 50
9 20
9 10
7 40
2 20
5 60
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY)
    return path


def test_reader_maps_ids_in_natural_order_and_keeps_time_order(tiny):
    inter = read_interactions(tiny)
    assert inter.users == ["2", "5", "7", "9"]
    assert inter.items == ["<pad>", "10", "20", "30", "40", "50", "60"]  # internal id = position; 0 pads
    assert inter.num_items == 6 and inter.num_users == 4 and inter.num_actions == 12
    # user 2: 10 30 40 20 -> 1 3 4 2; user 5: 60 -> 6; user 7: 30 20 10 50 40 -> 3 2 1 5 4; user 9: 20 10 -> 2 1
    assert [s.tolist() for s in inter.sequences] == [[1, 3, 4, 2], [6], [3, 2, 1, 5, 4], [2, 1]]
    assert inter.user_index["7"] == 2 and inter.item_index["50"] == 5


def test_reader_non_numeric_ids_sort_as_text(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("bob zelda\nann mario\nbob link\n")
    inter = read_interactions(path)
    assert inter.users == ["ann", "bob"] and inter.items == ["<pad>", "link", "mario", "zelda"]
    assert [s.tolist() for s in inter.sequences] == [[2], [3, 1]]


@pytest.mark.parametrize("line", ["1 2 3", "1"])
def test_bad_line_names_file_and_line(tmp_path, line):
    path = tmp_path / "bad.txt"
    path.write_text(f"1 2\n1 3\n{line}\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: expected 'user item'"):
        read_interactions(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_interactions(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no 'user item' lines"):
        read_interactions(tmp_path / "empty.txt")


def test_leave_one_out_split(tiny):
    split = leave_one_out(read_interactions(tiny).sequences)
    # users 5 and 9 (< 3 actions): train only
    assert [t.tolist() for t in split.train] == [[1, 3], [6], [3, 2, 1], [2, 1]]
    assert split.valid.tolist() == [4, 0, 5, 0] and split.test.tolist() == [2, 0, 4, 0]
    assert split.eval_users.tolist() == [0, 2]


def test_pad_left():
    assert pad_left(np.array([1, 2, 3]), 5).tolist() == [0, 0, 1, 2, 3]
    assert pad_left(np.array([1, 2, 3]), 2).tolist() == [2, 3]
    assert pad_left(np.array([], dtype=np.int64), 3).tolist() == [0, 0, 0]


def test_loader_datasets_exact(tiny):
    task = load_sasrec_task(str(tiny), seed=0, max_len=3, num_negatives=1)
    assert task.task == "sasrec" and task.metric == "ndcg@10" and task.input_shape == (3,)
    assert task.num_classes == 0 and task.class_names == []
    train = task.train
    assert train.users.tolist() == [0, 2, 3]  # user 5 has no transition to learn from
    # user 7 trains on 3 2 1: input (3, 2) -> positive (2, 1); user 9 on 2 1: input 2 -> 1
    assert train.inputs.tolist() == [[0, 0, 1], [0, 3, 2], [0, 0, 2]]
    assert train.positives.tolist() == [[0, 0, 3], [0, 2, 1], [0, 0, 1]]
    # validation: history = train part, candidate 0 = the second-last item
    assert task.val.history.tolist() == [[0, 1, 3], [3, 2, 1]]
    assert task.val.candidates[:, 0].tolist() == [4, 5]
    # test: history = everything but the last item (the last max_len of it)
    assert task.test.history.tolist() == [[1, 3, 4], [2, 1, 5]]
    assert task.test.candidates[:, 0].tolist() == [2, 4]
    # one negative each, never in the user's whole history: user 7 has 1..5, so only 6
    assert task.val.candidates[1, 1] == 6 and task.test.candidates[1, 1] == 6
    assert task.val.candidates[0, 1] in (5, 6) and task.test.candidates[0, 1] in (5, 6)
    assert task.info["num_items"] == 6 and task.info["num_users"] == 4 and task.info["max_len"] == 3 and task.info["eval_users"] == 2
    assert len(task.info["data_sha256"]) == 64 and task.info["data_path"].endswith("tiny.txt")


def test_training_negatives_fresh_each_epoch_valid_and_seeded(tmp_path):
    rng = np.random.default_rng(1)
    lines = [f"{u} {i}" for u in range(20) for i in rng.choice(60, size=rng.integers(3, 15), replace=False) + 1]
    path = tmp_path / "d.txt"
    path.write_text("\n".join(lines) + "\n")
    task = load_task("sasrec", str(path), seed=0, max_len=8, num_negatives=10)
    train = task.train
    torch.manual_seed(0)
    first = [train[i][2] for i in range(len(train))]
    train.set_epoch(1)
    second = [train[i][2] for i in range(len(train))]
    assert any(not torch.equal(a, b) for a, b in zip(first, second)), "negatives should be redrawn each epoch"
    train.set_epoch(0)
    torch.manual_seed(1)  # the global RNG plays no part: (seed, epoch, index) fixes an item's negatives
    replay = [train[i][2] for i in range(len(train))]
    assert all(torch.equal(a, b) for a, b in zip(first, replay)), "the same epoch should replay the negatives"
    other = load_task("sasrec", str(path), seed=1, max_len=8, num_negatives=10).train
    assert any(not torch.equal(a, other[i][2]) for i, a in enumerate(first)), "another run seed draws others"
    for i in range(len(train)):
        seq, pos, neg = train[i]
        seen = set(train.seen[i].tolist())
        assert torch.equal(neg == 0, pos == 0)  # negatives exactly where there is a target
        assert not (set(neg[neg != 0].tolist()) & seen)
        assert ((neg >= 0) & (neg <= 60)).all()


def test_eval_negatives_distinct_outside_history_and_deterministic(tmp_path):
    rng = np.random.default_rng(2)
    lines = [f"u{u} i{i}" for u in range(30) for i in rng.choice(200, size=rng.integers(3, 40), replace=False)]
    path = tmp_path / "d.txt"
    path.write_text("\n".join(lines) + "\n")
    inter = read_interactions(path)
    a = load_sasrec_task(str(path), seed=3, max_len=10, num_negatives=100)
    b = load_sasrec_task(str(path), seed=3, max_len=10, num_negatives=100)
    c = load_sasrec_task(str(path), seed=4, max_len=10, num_negatives=100)
    assert torch.equal(a.val.candidates, b.val.candidates) and torch.equal(a.test.candidates, b.test.candidates)
    assert not torch.equal(a.test.candidates, c.test.candidates)
    for split in (a.val, a.test):
        for row, user in enumerate(split.users.tolist()):
            negatives = split.candidates[row, 1:].tolist()
            assert len(set(negatives)) == 100
            assert not set(negatives) & set(inter.sequences[user].tolist())
            assert all(1 <= n <= inter.num_items for n in negatives)


def test_sample_negatives_small_pool_and_too_small():
    rng = np.random.default_rng(0)
    out = sample_negatives(rng, 10, np.array([1, 2, 3]), 6)
    assert len(set(out.tolist())) == 6 and not set(out.tolist()) & {1, 2, 3}
    with pytest.raises(DataError, match="cannot draw 8 negative items"):
        sample_negatives(rng, 10, np.array([1, 2, 3]), 8)


def test_loader_errors(tmp_path, tiny):
    assert "sasrec" in TASKS
    with pytest.raises(DataError, match="needs --data PATH"):
        load_task("sasrec", None, seed=0)
    with pytest.raises(ConfigError, match=r"task 'sasrec' has no option\(s\) \['maxlen'\]"):
        load_task("sasrec", str(tiny), seed=0, maxlen=3)
    with pytest.raises(ConfigError, match="max_len must be an integer >= 1"):
        load_sasrec_task(str(tiny), seed=0, max_len=0)
    with pytest.raises(DataError, match=r"tiny\.txt: user '2': cannot draw 100 negative items"):
        load_sasrec_task(str(tiny), seed=0)  # 6 items cannot give 100 negatives: the first user evaluated is named
    short = tmp_path / "short.txt"
    short.write_text("1 1\n1 2\n2 3\n")
    with pytest.raises(DataError, match="no user has 3 or more actions"):
        load_sasrec_task(str(short), seed=0, num_negatives=1)
    everything = tmp_path / "all.txt"
    everything.write_text("1 1\n1 2\n1 1\n1 2\n")  # a repeat buyer of both items
    with pytest.raises(DataError, match=r"all\.txt: user '1' trained on every one of the 2 items"):
        load_sasrec_task(str(everything), seed=0, num_negatives=1)


def test_a_repeated_item_of_a_user_is_refused_unless_kept(tmp_path):
    doubled = tmp_path / "doubled.txt"
    doubled.write_text("".join(line + "\n" + line + "\n" for line in TINY.splitlines() if line))
    with pytest.raises(DataError, match=r"doubled.txt:2: user '7' has item '30' again right after line 1 .*--data.repeats keep"):
        read_interactions(doubled)
    kept = read_interactions(doubled, repeats="keep")
    assert [len(s) for s in kept.sequences] == [2 * n for n in map(len, read_interactions_text(tmp_path).sequences)]
    spaced = tmp_path / "spaced.txt"  # the same item again later, not on the user's next line, is a real repeat
    spaced.write_text("1 5\n1 6\n1 5\n2 5\n2 6\n2 7\n")
    assert [list(s) for s in read_interactions(spaced).sequences] == [[1, 2, 1], [1, 2, 3]]
    assert load_sasrec_task(doubled, repeats="keep", num_negatives=1).info["repeats"] == "keep"
    with pytest.raises(ConfigError, match="repeats"):
        read_interactions(spaced, repeats="drop")


def read_interactions_text(tmp_path):
    path = tmp_path / "tiny-again.txt"
    path.write_text(TINY)
    return read_interactions(path)


def test_a_file_that_is_not_utf8_names_line_and_byte(tmp_path):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"1 5\n1 6\n2 \x89x\n")
    with pytest.raises(DataError, match=r"bin.txt: line 3, column 3: byte 0x89 is not UTF-8"):
        read_interactions(path)


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_user(tmp_path):
    """A file saved as "UTF-8 with BOM" starts with U+FEFF: its first user is still user 1, whose
    history is not split between "1" and "\\ufeff1"."""
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf1 5\n1 6\n1 7\n2 5\n2 6\n2 7\n")
    inter = read_interactions(path)
    assert inter.users == ["1", "2"] and inter.items == ["<pad>", "5", "6", "7"]
    assert [s.tolist() for s in inter.sequences] == [[1, 2, 3], [1, 2, 3]]


@pytest.mark.parametrize("odd", ["²", "--5", "1_0", "٣"])
def test_ids_that_only_look_numeric_sort_as_text(tmp_path, odd):
    """An id str.isdigit accepts but int() does not ("²"), or that int() reads other than its
    spelling ("1_0" is 10, "٣" is 3), makes the ids text: no ValueError traceback, no merge."""
    path = tmp_path / "odd.txt"
    path.write_text(f"1 10\n1 {odd}\n1 3\n{odd} 3\n{odd} 10\n")
    inter = read_interactions(path)
    assert inter.items == ["<pad>", *sorted({"10", "3", odd})] and inter.users == sorted({"1", odd})


def test_integer_ids_that_compare_equal_keep_one_order(tmp_path):
    """"01" and "1" are both 1: ordered by their spelling after their value, the same in every process."""
    path = tmp_path / "zeros.txt"
    path.write_text("1 1\n1 01\n1 2\n")
    assert read_interactions(path).items == ["<pad>", "01", "1", "2"]
