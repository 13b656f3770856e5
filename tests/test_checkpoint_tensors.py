"""A checkpoint tensor of another shape or another kind of number is refused before any copy."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from attnlab.errors import CheckpointError
from attnlab.checkpoint_tensors import check_fits
from attnlab.training.checkpoint import load_weights


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_floating_dtypes_convert(dtype):
    check_fits("ckpt", "w", torch.zeros(2, 3, dtype=dtype), torch.zeros(2, 3))


@pytest.mark.parametrize("dtype, words", [(torch.int64, "int64 (integer)"), (torch.int8, "int8 (integer)"),
                                          (torch.bool, "bool (boolean)"), (torch.complex64, "complex64 (complex)")])
def test_another_kind_of_number_is_named(dtype, words):
    with pytest.raises(CheckpointError, match=rf"^ckpt: tensor 'w' is {words.replace('(', '[(]').replace(')', '[)]')} "
                                               r"in the checkpoint but float32 \(floating-point\) in this model$"):
        check_fits("ckpt", "w", torch.zeros(2, 3, dtype=dtype), torch.zeros(2, 3))


def test_integer_buffers_take_integers_not_floats():
    check_fits("ckpt", "steps", torch.tensor(3, dtype=torch.int32), torch.tensor(5))  # int32 into int64: converts
    with pytest.raises(CheckpointError, match="float32 .floating-point. in the checkpoint but int64 .integer."):
        check_fits("ckpt", "steps", torch.tensor(3.5), torch.tensor(5))


def test_shape_is_checked_first():
    with pytest.raises(CheckpointError, match=r"tensor 'w' is \(3, 2\) in the checkpoint but \(2, 3\) in this model"):
        check_fits("ckpt", "w", torch.zeros(3, 2, dtype=torch.int64), torch.zeros(2, 3))


def test_load_weights_refuses_an_integer_weight_and_leaves_the_model_alone(tmp_path):
    model = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.ones(2, 3, dtype=torch.int64), "bias": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="tensor 'weight' is int64 .integer. in the checkpoint"):
        load_weights(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    save_file({"weight": torch.full((2, 3), 0.5, dtype=torch.bfloat16), "bias": torch.zeros(2, dtype=torch.float16)}, str(path))
    load_weights(model, path)
    assert model.weight.dtype == torch.float32 and torch.all(model.weight == 0.5)


@pytest.mark.parametrize("content", [b"garbage" * 10, b"", None])
def test_a_corrupt_truncated_or_missing_file_is_one_line_naming_it(tmp_path, content):
    from attnlab.checkpoint_tensors import read_tensors

    path = tmp_path / "model.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"^{path}: (not a readable safetensors file|checkpoint file not found)") as info:
        read_tensors(path)
    assert "\n" not in str(info.value)
    whole = tmp_path / "whole.safetensors"
    save_file({"w": torch.arange(1000.0)}, str(whole))
    path.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])  # truncated mid-data
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_tensors(path)
