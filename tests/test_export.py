"""ONNX export: the exported graph run in onnxruntime matches PyTorch."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from attnlab.cli import main  # noqa: E402
from attnlab.run import load_run  # noqa: E402


@pytest.mark.slow
def test_export_matches_pytorch(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", "--model.depth", "1", "--model.dim", "32",
                 "--model.num_heads", "2", "--train.batch_size", "128"]) == 0
    onnx_file = tmp_path / "model.onnx"
    assert main(["export", str(run), "--onnx", str(onnx_file)]) == 0
    _, model, _ = load_run(run)
    session = ort.InferenceSession(str(onnx_file))
    for batch in (1, 7):  # the batch dimension is dynamic
        x = torch.randn(batch, 1, 8, 8)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == want.shape
        assert abs(got - want).max() < 1e-4


def test_export_bad_output_name(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "m.txt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err


@pytest.mark.slow
def test_text_model_with_padding_exports(tmp_path):
    """A padded batch takes attention's masked-row fix-up, which must trace without branching on data."""
    data = tmp_path / "texts.tsv"
    rows = [f"{'pos' if i % 2 else 'neg'}\t{'good fine great' if i % 2 else 'bad awful poor'} words number {i}" for i in range(60)]
    data.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--task", "text-classification", "--data", str(data), "--out", str(run), "--epochs", "1",
                 "--model.dim", "16", "--model.depth", "1", "--model.num_heads", "2", "--train.batch_size", "8"]) == 0
    onnx_file = tmp_path / "text.onnx"
    assert main(["export", str(run), "--onnx", str(onnx_file)]) == 0
    _, model, _ = load_run(run)
    session = ort.InferenceSession(str(onnx_file))
    for batch, n in ((1, model.config.max_length), (3, 20)):  # batch and length are both dynamic
        ids = torch.randint(4, model.config.vocab_size, (batch, n))
        ids[:, n // 2 :] = 0  # padding
        got = session.run(None, {session.get_inputs()[0].name: ids.numpy()})[0]
        with torch.no_grad():
            want = model.eval()(ids).numpy()
        assert abs(got - want).max() < 1e-4
