import logging

import pytest
import torch

from attnlab.training import precision as P


def _cpu_probes(monkeypatch, *, bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


@pytest.mark.parametrize("bf16,amx,expected", [(False, False, False), (True, False, True), (False, True, True)])
def test_native_bf16_reads_the_cpu_probes(monkeypatch, bf16, amx, expected):
    _cpu_probes(monkeypatch, bf16=bf16, amx=amx)
    assert P.native_bf16("cpu") is expected


def test_auto_is_fp32_on_a_cpu_even_with_bf16_instructions(monkeypatch):
    _cpu_probes(monkeypatch, bf16=True, amx=True)
    assert P.resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_explicit_bf16_on_an_emulating_cpu_is_kept_with_a_warning(monkeypatch, caplog):
    _cpu_probes(monkeypatch, bf16=False, amx=False)
    with caplog.at_level(logging.WARNING, logger="attnlab.training.precision"):
        assert P.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "no native bf16" in message and "--train.precision fp32" in message


def test_explicit_bf16_on_a_bf16_cpu_and_fp32_anywhere_say_nothing(monkeypatch, caplog):
    _cpu_probes(monkeypatch, bf16=True, amx=False)
    with caplog.at_level(logging.WARNING, logger="attnlab.training.precision"):
        assert P.resolve_precision("bf16", torch.device("cpu")) == "bf16"
        assert P.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert caplog.records == []
