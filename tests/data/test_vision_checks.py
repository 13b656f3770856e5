"""``--data.image_size`` of the image-folder task: one positive integer is a square, two are
(height, width), anything else is one ConfigError line."""

from __future__ import annotations

import pytest

from attnlab.cli import main
from attnlab.data.vision import image_size_pair, load_image_folder_task
from attnlab.errors import ConfigError
from tests.data.test_split_checks import _images


@pytest.mark.parametrize("value, pair", [(12, (12, 12)), ([8, 12], (8, 12)), ((5, 7), (5, 7))])
def test_image_size_accepts_one_or_two_positive_integers(value, pair):
    assert image_size_pair(value) == pair


@pytest.mark.parametrize("value", [0, -8, [8], [8, 8, 8], [0, 8], "32", 8.5, True, None])
def test_image_size_refuses_anything_else(value):
    with pytest.raises(ConfigError, match=r"--data.image_size must be a positive integer \(a square\) or two"):
        image_size_pair(value)


def test_a_single_number_trains_a_square_and_a_bad_one_is_one_line(tmp_path, capsys):
    root = _images(tmp_path / "img", count=3)
    assert load_image_folder_task(root, image_size=12).input_shape == (1, 12, 12)
    out = tmp_path / "run"
    assert main(["train", "--task", "images", "--data", str(root), "--data.image_size", "-8", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "got -8" in err and not out.exists(), err


def test_a_file_that_is_no_image_names_the_file_not_a_buffer(tmp_path):
    import io

    from attnlab.data.images import open_image
    from attnlab.errors import DataError

    with pytest.raises(DataError, match=r"^cannot read image a/x.png: not an image PIL can read") as info:
        open_image(io.BytesIO(b"just some text, not a PNG"), name="a/x.png")
    assert "BytesIO" not in str(info.value)
