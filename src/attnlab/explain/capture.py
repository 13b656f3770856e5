"""Capture exact attention weights from any model built of ``MultiHeadAttention`` modules.

Fused kernels never return attention weights (PyTorch #119811, HF #31990), so capture sets
each chosen module's ``weight_hook``: the module then recomputes the exact softmax weights
per query block from q and k, beside its fused output, and hands them to us. Slicing to the
chosen heads and query rows happens inside the hook as each layer finishes, and modules that
were not chosen get no hook at all, so asking for a subset never stores (or computes) every
layer's full (B, H, N, M) map — the memory trap of ``output_attentions`` (HF #9387).

Gradients of the weights (for gradient rollout) need care for the same reason: the weights
handed to the hook are a side branch, the output itself comes from the fused kernel, so
autograd has no path from the output to them. Since ``out_h = W_h @ V_h`` per head,
``dL/dW_h = dL/dout_h @ V_h^T`` exactly (without attention dropout); ``grad=True`` records
V (``v_proj``'s output) and dL/dout (the gradient at ``out_proj``'s input) and
``AttentionMaps.grads()`` forms that product, sliced like the maps.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence, Union

import torch
from torch import Tensor, nn

from attnlab.explain.maps import AttentionMaps
from attnlab.layers.attention import MultiHeadAttention

__all__ = ["AttentionMaps", "Recorder", "capture", "recording", "attention_modules"]  # capture_hf: capture_hf.py

LayerSpec = Union[None, int, str, slice, Sequence[Union[int, str]]]
IndexSpec = Union[None, int, slice, Sequence[int], Tensor]


class _GradSource:
    """V and dL/d(attention output) of one attention call: dL/dW = dL/dout @ V^T, per head."""

    def __init__(self, module: MultiHeadAttention, values: Tensor | None, select):
        self.module, self.values, self.select = module, values, select
        self.dout: Tensor | None = None

    def grad(self) -> Tensor | None:
        if self.dout is None or self.values is None:
            return None
        mod = self.module
        b, n, _ = self.dout.shape
        dout = self.dout.view(b, n, mod.num_heads, mod.head_dim).transpose(1, 2)  # (B, H, N, D)
        v = self.values.view(b, -1, mod.num_kv_heads, mod.head_dim).transpose(1, 2)  # (B, G, M, D)
        v = v.repeat_interleave(mod.num_heads // mod.num_kv_heads, dim=1)  # (B, H, M, D)
        return self.select(dout @ v.transpose(-1, -2))  # (B, H', N', M)


def attention_modules(model: nn.Module) -> list[tuple[str, MultiHeadAttention]]:
    """Every ``MultiHeadAttention`` in ``model.modules()`` order, named by module path."""
    return [(name or "(root)", mod) for name, mod in model.named_modules() if isinstance(mod, MultiHeadAttention)]


def _layer_indices(names: list[str], layers: LayerSpec, who: str, unit: str) -> list[int]:
    """Indices into ``names`` chosen by ``layers`` (None: all; a slice; ints and/or names), in
    forward order without duplicates; unknown names and indices out of range are a ValueError."""
    if layers is None:
        return list(range(len(names)))
    if isinstance(layers, slice):
        return list(range(len(names)))[layers]
    chosen: dict[int, None] = {}
    for key in [layers] if isinstance(layers, (int, str)) else list(layers):
        if isinstance(key, str):
            if key not in names:
                raise ValueError(f"{who}: no attention {unit} named {key!r}; available: {names}")
            chosen[names.index(key)] = None
        elif isinstance(key, int) and not isinstance(key, bool):
            if not -len(names) <= key < len(names):
                raise ValueError(f"{who}: layer index {key} out of range; the model has {len(names)} attention {unit}s")
            chosen[key % len(names)] = None
        else:
            raise ValueError(f"{who}: layers must be ints or {unit} names, got {key!r}")
    return sorted(chosen)


def _select_layers(model: nn.Module, layers: LayerSpec) -> list[tuple[str, MultiHeadAttention]]:
    found = attention_modules(model)
    if not found:
        raise ValueError(f"capture: {type(model).__name__} contains no attnlab MultiHeadAttention module")
    return [found[i] for i in _layer_indices([n for n, _ in found], layers, "capture", "module")]


def _index(spec: IndexSpec, size: int, what: str) -> Tensor | slice | None:
    """A selection along one axis: None (all), a slice, or a 1-D long index tensor."""
    if spec is None:
        return None
    if isinstance(spec, slice):
        return spec
    idx = torch.as_tensor([spec] if isinstance(spec, int) else spec, dtype=torch.long).reshape(-1)
    if idx.numel() and (idx.min() < -size or idx.max() >= size):
        raise ValueError(f"capture: {what} index out of range for size {size}: {idx.tolist()}")
    return idx % size


class _RetainedGrad:
    def __init__(self, weights: Tensor, select):
        self.weights, self.select = weights, select

    def grad(self) -> Tensor | None:
        g = self.weights.grad
        return None if g is None else self.select(g)


class _Tap:
    """Installs weight hooks on chosen modules, slices each map as it arrives, restores on close."""

    def __init__(self, chosen, heads: IndexSpec, query_rows: IndexSpec, grad: bool, device):
        self.chosen = chosen
        self.heads, self.query_rows = heads, query_rows
        self.grad, self.device = grad, device
        # What each module had when this tap went on (read at enable, not here: a recording made
        # earlier must chain onto a capture that went on since), restored when it comes off.
        self.previous: list[Callable | None] = [None] * len(chosen)
        self.previous_selection: list[tuple | None] = [None] * len(chosen)
        self.enabled = False
        self.selection = (heads, query_rows)  # set on a module only when this tap is alone there
        self.names: list[str] = []
        self.maps: list[Tensor] = []
        self.sources: list[_GradSource | _RetainedGrad | None] = []
        self.calls: dict[str, int] = {}
        self.handles: list[Any] = []
        # Per module, within one call: v_proj's output, out_proj's input, a source awaiting it.
        self.pending_values: dict[int, Tensor] = {}
        self.pending_outputs: dict[int, Tensor] = {}
        self.open_sources: dict[int, _GradSource] = {}

    def _hook_for(self, name: str, previous: Callable | None):
        def hook(module: MultiHeadAttention, weights: Tensor) -> None:
            if previous is not None:  # chain, so nested capture / recording both see the weights
                previous(module, weights)
            self._store(name, weights, module)

        return hook

    def _selector(self, heads: int, rows: int) -> Callable[[Tensor], Tensor]:
        h_idx = _index(self.heads, heads, "head")
        q_idx = _index(self.query_rows, rows, "query row")

        def select(w: Tensor) -> Tensor:
            sliced = False
            if h_idx is not None:
                w = w[:, h_idx] if isinstance(h_idx, slice) else w.index_select(1, h_idx.to(w.device))
                sliced = True
            if q_idx is not None:
                w = w[:, :, q_idx] if isinstance(q_idx, slice) else w.index_select(2, q_idx.to(w.device))
                sliced = True
            if self.device is not None:
                return w.to(self.device)
            return w.clone() if sliced else w  # a slice is a view that would keep the full storage alive

        return select

    def _store(self, name: str, weights: Tensor, module: MultiHeadAttention | None = None) -> None:
        if module is not None and module.weight_selection is self.selection:
            # the module already computed just this tap's heads/rows
            select: Callable[[Tensor], Tensor] = lambda w: w.to(self.device) if self.device is not None else w
        else:
            select = self._selector(weights.shape[1], weights.shape[2])
        w = select(weights if self.grad else weights.detach())
        source = None
        if self.grad and module is not None:
            values = self.pending_values.pop(id(module), None)
            if values is not None and values.shape[1] != weights.shape[-1]:
                values = None  # keys came partly from a KV cache: V is not v_proj's output alone
            source = _GradSource(module, values, select)
            attn_out = self.pending_outputs.pop(id(module), None)
            if attn_out is not None:  # out_proj already ran (the module calls the hook last)
                self._catch_grad(attn_out, source)
            else:
                self.open_sources[id(module)] = source
        elif self.grad and weights.requires_grad:
            # Weights the output really used (Hugging Face eager): keep the full tensor's grad,
            # since a slice taken after the forward is a branch the output never saw.
            weights.retain_grad()
            source = _RetainedGrad(weights, select)
        count = self.calls.get(name, 0)
        self.calls[name] = count + 1
        self.names.append(name if count == 0 else f"{name}#{count}")
        self.maps.append(w)
        self.sources.append(source)

    @staticmethod
    def _catch_grad(attn_out: Tensor, source: _GradSource) -> None:
        """dL/d(attention output), the input of out_proj. Shape: (B, N, C)."""
        if attn_out.requires_grad:
            def catch(g: Tensor) -> None:
                source.dout = g.detach()

            attn_out.register_hook(catch)

    def _grad_hooks(self, mod: MultiHeadAttention) -> None:
        key = id(mod)

        def keep_values(_, args, output):
            self.pending_values[key] = output.detach()

        def watch_output(_, args):
            attn_out = args[0]
            replaced = None
            if not attn_out.requires_grad and torch.is_grad_enabled():
                # Nothing below this layer needs a gradient (e.g. frozen first blocks): the
                # output still depends on this attention, so start the graph here, same values.
                attn_out = replaced = attn_out.detach().requires_grad_(True)
            source = self.open_sources.pop(key, None)
            if source is None:
                self.pending_outputs[key] = attn_out
            else:
                self._catch_grad(attn_out, source)
            return None if replaced is None else (replaced, *args[1:])

        self.handles.append(mod.v_proj.register_forward_hook(keep_values))
        self.handles.append(mod.out_proj.register_forward_pre_hook(watch_output))

    @property
    def pushed_down(self) -> bool:
        """Without gradients, the modules compute only the chosen heads/rows themselves."""
        return not self.grad and (self.heads is not None or self.query_rows is not None)

    def enable(self) -> None:
        if self.enabled:
            return
        self.enabled = True
        self.previous = [mod.weight_hook for _, mod in self.chosen]
        self.previous_selection = [mod.weight_selection for _, mod in self.chosen]
        for (name, mod), prev in zip(self.chosen, self.previous):
            mod.weight_hook = self._hook_for(name, prev)
            # Alone on the module, its heads/rows are all it computes; chained onto another hook
            # (a capture inside a recording, or the reverse), the module computes every head and
            # row and each tap slices its own.
            mod.weight_selection = self.selection if self.pushed_down and prev is None else None
            if self.grad:
                self._grad_hooks(mod)

    def disable(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        for (_, mod), prev, selection in zip(self.chosen, self.previous, self.previous_selection):
            mod.weight_hook = prev
            mod.weight_selection = selection
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.pending_values, self.pending_outputs, self.open_sources = {}, {}, {}

    def take(self, output: Any = None) -> AttentionMaps:
        maps = AttentionMaps(names=self.names, maps=self.maps, output=output, _grad_sources=self.sources)
        self.names, self.maps, self.sources, self.calls = [], [], [], {}
        return maps


def capture(
    model: nn.Module,
    *inputs: Any,
    layers: LayerSpec = None,
    heads: IndexSpec = None,
    query_rows: IndexSpec = None,
    grad: bool = False,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> AttentionMaps:
    """Run ``model(*inputs, **kwargs)`` once and return its exact attention weights.

    Args:
        layers: attention modules to keep, by position in ``model.modules()`` order
            (negative allowed), by module path (e.g. ``"blocks.3.attn"``), or a slice.
        heads, query_rows: selections (int, list, slice or index tensor) applied inside
            the hook as each layer finishes.
        grad: keep the autograd graph (no ``torch.no_grad``) and record what
            ``AttentionMaps.grads()`` needs after ``backward()`` (for ``gradient_rollout``);
            exact when attention dropout is off (eval mode).
        device: move each map there as it arrives (e.g. "cpu" to spare GPU memory).

    The model's train/eval mode is left as is; the weights are pre-dropout either way.
    Every hook is restored afterwards, also when the forward raises.

    Shape: each map (B, H', N', M); ``output`` is whatever the model returned.
    """
    tap = _Tap(_select_layers(model, layers), heads, query_rows, grad, device)
    tap.enable()
    try:
        with contextlib.nullcontext() if grad else torch.no_grad():
            output = model(*inputs, **kwargs)
    finally:
        tap.disable()
    return tap.take(output)


class Recorder:
    """Live handle of ``recording``: ``latest`` holds the maps of the last recorded forward."""

    def __init__(self, every: int, on_record: Callable[[int, AttentionMaps], None] | None):
        self.every = every
        self.on_record = on_record
        self.steps = 0  # forwards of the model seen
        self.num_recorded = 0
        self.latest: AttentionMaps | None = None


@contextlib.contextmanager
def recording(
    model: nn.Module,
    *,
    layers: LayerSpec = None,
    heads: IndexSpec = None,
    query_rows: IndexSpec = None,
    every: int = 1,
    grad: bool = False,
    device: torch.device | str | None = "cpu",
    on_record: Callable[[int, AttentionMaps], None] | None = None,
) -> Iterator[Recorder]:
    """Record attention during ordinary use of ``model`` (e.g. inside a training loop).

    Every ``every``-th call of ``model`` (1st, 1+every, ...) is recorded; on the others the
    hooks are off, so they pay nothing for the weights. After each recorded call,
    ``recorder.latest`` is its ``AttentionMaps`` (with ``output``) and
    ``on_record(step, maps)`` runs. Maps are detached and moved to ``device`` unless
    ``grad=True``. Hooks are restored on exit, also after an exception.
    """
    if every < 1:
        raise ValueError(f"recording: every must be >= 1, got {every}")
    tap = _Tap(_select_layers(model, layers), heads, query_rows, grad, None if grad else device)
    recorder = Recorder(every, on_record)
    active = [False]

    def before(module, args):
        recorder.steps += 1
        active[0] = (recorder.steps - 1) % every == 0
        tap.take()  # drop anything a previous, interrupted call left behind
        if active[0]:
            tap.enable()
        else:
            tap.disable()  # a recorded call that raised left the hooks on: this step pays nothing

    def after(module, args, output):
        if not active[0]:
            return
        tap.disable()
        active[0] = False
        maps = tap.take(output if grad else _detach(output))
        recorder.latest = maps
        recorder.num_recorded += 1
        if on_record is not None:
            on_record(recorder.steps, maps)

    handles = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    try:
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
        tap.disable()


def _detach(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output.detach()
    if isinstance(output, (tuple, list)):
        return type(output)(_detach(o) for o in output) if not hasattr(output, "_fields") else output
    if isinstance(output, dict):
        return {k: _detach(v) for k, v in output.items()}
    return output
