"""``open_gpt2_checkpoint``: a GPT-2 directory as the start of a language-model run (``--init``)."""

from __future__ import annotations

import pytest
import torch

from attnlab.interop.gpt2 import open_gpt2_checkpoint
from attnlab.models import create_model
from tests.interop.test_hf import _untied_gpt2

transformers = pytest.importorskip("transformers")


def test_an_untied_output_layer_is_carried(tmp_path):
    hf = _untied_gpt2(tmp_path)
    checkpoint = open_gpt2_checkpoint(tmp_path)
    model = create_model("gpt-lm", **{**checkpoint.model_fields(), "dropout": 0.0, "attn_dropout": 0.0})
    checkpoint.load_into(model)
    ids = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), hf(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.lm_head.weight, hf.lm_head.weight, atol=0, rtol=0)
