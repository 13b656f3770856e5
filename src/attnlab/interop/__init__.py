"""Load weights other libraries saved (Hugging Face ``save_pretrained`` directories)."""

from attnlab.interop.bert import BertCheckpoint, file_sha256, open_bert_checkpoint
from attnlab.interop.hf import load_hf_bert, load_hf_gpt2, load_hf_vit

__all__ = ["load_hf_vit", "load_hf_bert", "load_hf_gpt2", "BertCheckpoint", "open_bert_checkpoint", "file_sha256"]
