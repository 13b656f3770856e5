"""The HTML explorer: one self-contained file, the data embedded losslessly enough, bounded size."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import zlib

import numpy as np
import pytest
import torch

from attnlab.explain import ReportExample, capture, rollout, write_report
from tests.explain._tiny import TinyViT


def _payload(html: str) -> dict:
    found = re.findall(r'<script type="application/json" id="attnlab-data">(.*?)</script>', html, flags=re.S)
    assert len(found) == 1
    return json.loads(found[0])


def _decode(entry: dict, compressed: bool = True) -> np.ndarray:
    """Independent decoder of the documented format: level / (2**bits - 1) * row max."""
    raw = base64.b64decode(entry["q"])
    raw = np.frombuffer(zlib.decompress(raw) if compressed else raw, dtype=np.uint8)
    count = entry["heads"] * entry["n"] * entry["m"]
    if entry["bits"] == 4:
        raw = np.stack([raw >> 4, raw & 15], axis=-1).reshape(-1)[:count]
    scale = np.frombuffer(base64.b64decode(entry["scale"]), dtype="<f4").reshape(entry["heads"], entry["n"])
    levels = raw.reshape(entry["heads"], entry["n"], entry["m"]).astype(np.float64)
    return levels / ((1 << entry["bits"]) - 1) * scale[..., None]


def _image_example(n_side: int = 4, heads: int = 2, depth: int = 2) -> tuple[ReportExample, list[np.ndarray], np.ndarray]:
    model = TinyViT(dim=16, heads=heads, depth=depth, grid=(n_side, n_side)).eval()
    maps = capture(model, torch.randn(1, n_side * n_side, 16))
    image = (np.random.rand(8, 8, 3) * 255).astype(np.uint8)
    ex = ReportExample.from_capture("an image", "image", image, maps, num_prefix_tokens=1, prediction="cat", label="dog")
    return ex, [m[0].numpy() for m in maps.maps], image


def test_report_is_self_contained_and_embeds_the_data(tmp_path):
    ex, arrays, image = _image_example()
    path = write_report(tmp_path / "report.html", [ex], title="Tiny <ViT>", meta={"model": "tiny", "epochs": 3})
    assert list(tmp_path.iterdir()) == [path]  # one file, nothing beside it
    html = path.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert not re.search(r"<(link|img|iframe)\b", html) and not re.search(r"<script[^>]+src=", html)
    assert "@import" not in html and "url(" not in html
    assert "<title>Tiny &lt;ViT&gt;</title>" in html
    assert html.count("<canvas") == 2  # drawn on canvas, not one DOM node per cell
    data = _payload(html)
    assert data["meta"] == {"model": "tiny", "epochs": 3}
    (e,) = data["examples"]
    assert e["kind"] == "image" and e["grid"] == [4, 4] and e["numPrefix"] == 1
    assert e["tokens"][:3] == ["CLS", "p0", "p1"] and len(e["tokens"]) == 17
    assert e["prediction"] == "cat" and e["label"] == "dog"
    assert [layer["name"] for layer in e["layers"]] == ["blocks.0.attn", "blocks.1.attn"]
    for layer, want in zip(e["layers"], arrays):
        got = _decode(layer)
        assert got.shape == want.shape == (2, 17, 17)
        # Per-row scaling: the error is at most half a level of that row's maximum.
        bound = want.max(axis=-1, keepdims=True) / 255 / 2 + 1e-7
        assert np.all(np.abs(got - want) <= bound)
    want_roll = rollout([torch.as_tensor(a)[None] for a in arrays])[0].numpy()
    got_roll = _decode(e["rollout"])[0]
    assert np.all(np.abs(got_roll - want_roll) <= want_roll.max(axis=-1, keepdims=True) / 510 + 1e-7)
    pixels = np.frombuffer(zlib.decompress(base64.b64decode(e["input"]["data"])), dtype=np.uint8)
    assert np.array_equal(pixels.reshape(8, 8, 3), image)


def test_report_several_kinds_and_four_bits(tmp_path):
    ex_img, _, _ = _image_example()
    words = "a film that never quite finds its feet".split()
    maps = [torch.softmax(torch.randn(3, len(words), len(words)), dim=-1) for _ in range(2)]
    ex_tok = ReportExample("review", "tokens", words, maps, prediction="negative", label="negative")
    series = np.sin(np.linspace(0, 12, 800))
    series_maps = [np.random.dirichlet(np.ones(9), size=(2, 9)) for _ in range(3)]
    ex_ser = ReportExample("ecg", "series", series, series_maps, num_prefix_tokens=1, rollout=np.eye(9))
    path = write_report(tmp_path / "r.html", [ex_img, ex_tok, ex_ser], bits=4, compress=False)
    data = _payload(path.read_text(encoding="utf-8"))
    assert [e["kind"] for e in data["examples"]] == ["image", "tokens", "series"]
    assert data["compressed"] is False
    tok = data["examples"][1]
    assert tok["tokens"] == words and tok["input"]["tokens"] == words
    for layer, want in zip(tok["layers"], maps):
        got = _decode(layer, compressed=False)
        bound = want.numpy().max(axis=-1, keepdims=True) / 15 / 2 + 1e-7
        assert np.all(np.abs(got - want.numpy()) <= bound)
    ser = data["examples"][2]
    assert ser["tokens"][0] == "CLS" and ser["rolloutGiven"] is True
    np.testing.assert_array_equal(_decode(ser["rollout"], compressed=False)[0], np.eye(9))
    values = np.frombuffer(base64.b64decode(ser["input"]["data"]), dtype="<f4")
    np.testing.assert_allclose(values, series, rtol=1e-6, atol=1e-7)


def test_cross_attention_layers_get_no_rollout(tmp_path):
    maps = [np.random.dirichlet(np.ones(6), size=(2, 4))]  # (H=2, N=4, M=6)
    ex = ReportExample("translation", "tokens", ["le", "chat", "est", "noir", "ce", "soir"], maps,
                       tokens=["the", "cat", "is", "black"], key_tokens=["le", "chat", "est", "noir", "ce", "soir"])
    data = _payload(write_report(tmp_path / "x.html", [ex]).read_text(encoding="utf-8"))
    assert data["examples"][0]["rollout"] is None and data["examples"][0]["layers"][0]["m"] == 6


def test_tokens_cannot_break_out_of_the_script(tmp_path):
    words = ["</script><script>alert(1)</script>", "<!--", "&amp;", "naïve"]
    ex = ReportExample("xss", "tokens", words, [np.full((1, 4, 4), 0.25)])
    html = write_report(tmp_path / "x.html", [ex], meta={"note": "</script>"}).read_text(encoding="utf-8")
    assert "alert(1)</script>" not in html and "<!--" not in html
    assert _payload(html)["examples"][0]["tokens"] == words


def test_size_bound_at_n_1024(tmp_path):
    n, layers, heads = 1024, 2, 2
    # Peaked, local attention (as trained vision models show): compresses well.
    pos = torch.arange(n, dtype=torch.float32)
    r, c = pos // 32, pos % 32
    local = -((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2) / 8.0  # (N, N)
    peaked = torch.softmax(local + torch.randn(layers, heads, n, n), dim=-1).numpy()
    image = np.zeros((64, 64), dtype=np.uint8)
    ex = ReportExample("peaked", "image", image, list(peaked), grid=(32, 32))
    size_peaked = write_report(tmp_path / "peaked.html", [ex], auto_rollout=False).stat().st_size
    # Near-uniform noise (an untrained model): the worst case, about raw bytes * 4/3 (base64).
    noise = torch.softmax(torch.randn(layers, heads, n, n) * 0.1, dim=-1).numpy()
    ex = ReportExample("noise", "image", image, list(noise), grid=(32, 32))
    size_noise = write_report(tmp_path / "noise.html", [ex], auto_rollout=False).stat().st_size
    size_noise4 = write_report(tmp_path / "noise4.html", [ex], bits=4, auto_rollout=False).stat().st_size
    raw = layers * heads * n * n  # one byte a weight
    assert size_peaked < 0.35 * raw, size_peaked  # measured ~0.6 MB for 4.2 MB of levels
    assert size_noise < 1.34 * raw + 100_000, size_noise  # measured ~4.5 MB
    assert size_noise4 < 0.67 * raw + 100_000, size_noise4  # measured ~1.8 MB


def test_example_validation():
    maps = [np.full((2, 5, 5), 0.2)]
    with pytest.raises(ValueError, match="kind"):
        ReportExample("x", "video", None, maps)
    with pytest.raises(ValueError, match="tokens for N=5"):
        ReportExample("x", "tokens", ["a"], maps, tokens=["a", "b"])
    with pytest.raises(ValueError, match="square grid"):
        ReportExample("x", "image", np.zeros((4, 4)), [np.full((1, 6, 6), 1 / 6)])
    with pytest.raises(ValueError, match="grid"):
        ReportExample("x", "image", np.zeros((4, 4)), maps, grid=(2, 3))
    with pytest.raises(ValueError, match=r"\(H, N, M\)"):
        ReportExample("x", "series", np.zeros(10), [np.zeros((5, 5))])
    with pytest.raises(ValueError, match="rollout"):
        ReportExample("x", "series", np.zeros(10), maps, rollout=np.eye(4))
    with pytest.raises(ValueError, match="bits"):
        write_report("unused.html", [ReportExample("x", "series", np.zeros(10), maps)], bits=3)
    with pytest.raises(ValueError, match="maps is empty; give one .* or the relevance maps in methods"):
        ReportExample("x", "series", np.zeros(10), [])
    with pytest.raises(ValueError, match="method 'exact' has 3 scores for 4 non-prefix tokens"):
        ReportExample("x", "series", np.zeros(4), [], tokens=["a", "b", "c", "d"], methods={"exact": np.ones(3)})


def test_an_example_whose_only_maps_are_methods(tmp_path):
    """A model without attention (a linear forecaster): no layer, no rollout, one position per method score."""
    scores = np.array([0.25, 1.0, 0.0, 0.5])
    ex = ReportExample("linear", "series", np.arange(4.0), [], methods={"exact": scores})
    assert ex.tokens == ["t0", "t1", "t2", "t3"] and ex.layer_names == []
    data = _payload(write_report(tmp_path / "r.html", [ex]).read_text())["examples"][0]
    assert data["layers"] == [] and data["rollout"] is None and data["methods"] == {"exact": scores.tolist()}


def test_page_script_is_valid_javascript(tmp_path):
    """Syntax only (node --check); the page's behaviour is for the browser tests."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    ex, _, _ = _image_example()
    html = write_report(tmp_path / "r.html", [ex]).read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    assert len(scripts) == 1
    (tmp_path / "page.js").write_text(scripts[0], encoding="utf-8")
    subprocess.run([node, "--check", str(tmp_path / "page.js")], check=True)


def test_the_page_script_is_its_parts_in_order_inside_one_closure(tmp_path):
    """The explorer's script is kept one concern per file (each well under the ~400-line guide) and
    joined, in `PAGE_JS_PARTS` order, inside one closure: the report still carries one inline script."""
    from importlib import resources

    from attnlab.explain._report_assets import PAGE_JS, PAGE_JS_PARTS

    assets = resources.files("attnlab.explain").joinpath("assets")
    texts = [assets.joinpath(name).read_text(encoding="utf-8") for name in PAGE_JS_PARTS]
    assert len(PAGE_JS_PARTS) >= 3 and not assets.joinpath("explorer.js").is_file()
    assert all(0 < len(t.splitlines()) <= 300 for t in texts), [len(t.splitlines()) for t in texts]
    assert PAGE_JS.startswith('"use strict";\n(function () {\n') and PAGE_JS.endswith("})();\n")
    places = [PAGE_JS.find(t) for t in texts]
    assert all(p > 0 for p in places) and places == sorted(places)
    assert "showExample();" in texts[-1].splitlines()[-1]  # the last part starts the page, after every declaration
    ex, _, _ = _image_example()
    html = write_report(tmp_path / "r.html", [ex]).read_text(encoding="utf-8")
    assert html.count(PAGE_JS) == 1 and len(re.findall(r"<script>", html)) == 1
    node = shutil.which("node")
    if node is not None:  # each part is a whole fragment: declarations and statements, no half of a block
        for name, text in zip(PAGE_JS_PARTS, texts):
            (tmp_path / name).write_text(text, encoding="utf-8")
            subprocess.run([node, "--check", str(tmp_path / name)], check=True)
