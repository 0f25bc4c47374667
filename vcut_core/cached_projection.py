"""Exact, cached replacement of a one-token cross-attention (VCUT, section III).

With a single key, softmax over the key axis is exactly 1, so

    attn2(x, ctx) = to_out(softmax(q k^T) v) = to_out(to_v(ctx))    (broadcast over queries)

for every query token. The projection depends on the context only, so it is
computed once per distinct context and served from a small cache afterwards.

Cache safety: an entry is served only when the new context is *equal*, element
for element, to the one it was computed from, and the projection weights are the
same tensors at the same version (in-place weight patches bump the version).
Entries live on the wrapper, which belongs to one model. Contexts arrive as
runs of identical rows (SVD repeats one CLIP token over frames or pixels), so an
entry stores only the distinct rows and their run lengths: a few KiB.
"""
import logging
from collections import OrderedDict

import torch
from torch import nn

MODES = ("linear", "drop")


def run_length_rows(context: torch.Tensor):
    """Split ``context`` [N, 1, D] into its runs of equal consecutive rows.

    Returns ``(rows [k, 1, D], counts [k])`` with ``rows.repeat_interleave(counts, 0) == context``.
    """
    flat = context.reshape(context.shape[0], -1)
    starts = torch.ones(flat.shape[0], dtype=torch.bool, device=flat.device)
    starts[1:] = (flat[1:] != flat[:-1]).any(dim=1)
    index = starts.nonzero().squeeze(1)
    counts = torch.diff(index, append=index.new_tensor([flat.shape[0]]))
    return context[index], counts


def mean_context(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """The one context a step past the guidance cutoff runs with (VCUT eq. 4): the cond/uncond mean. Exact
    where cross-attention reads one token: its output ``L(ctx) = to_out(to_v(ctx))`` is affine, so
    ``L(mean(a, b)) = mean(L(a), L(b))``."""
    return (cond + uncond) * 0.5


def _tensor_fingerprint(t):
    # Inference tensors keep no version counter; they cannot change outside inference mode.
    return None if t is None else (id(t), t.data_ptr(), -1 if t.is_inference() else t._version)


def _linear_fingerprint(linear: nn.Module):
    # ComfyUI applies LoRA-style patches at cast time through weight_function.
    patches = tuple(map(id, getattr(linear, "weight_function", ()) or ()))
    return _tensor_fingerprint(linear.weight), _tensor_fingerprint(getattr(linear, "bias", None)), patches


class CachedProjectionCrossAttention(nn.Module):
    """Drop-in for a cross-attention module (ComfyUI ``CrossAttention`` or diffusers ``Attention``).

    ``mode="linear"`` returns ``to_out(to_v(context))`` broadcast over the query
    tokens; ``mode="drop"`` returns zeros (the paper's TCA removal). Whenever the
    shortcut would not be exact (context with more than one token, a mask, a
    separate value tensor, diffusers' cross-norm or residual options) the call
    goes to the original module unchanged.
    """

    def __init__(self, attention: nn.Module, mode: str = "linear", max_entries: int = 4):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.attention = attention
        self.mode = mode
        self.max_entries = max_entries
        self._cache = OrderedDict()
        self.stats = {"hits": 0, "misses": 0, "fallbacks": 0}

    @property
    def wrapped(self) -> nn.Module:
        """The module this one wraps (every pack wrapper has ``wrapped``: a patch can be undone or replaced)."""
        return self.attention

    # diffusers' Attention exposes these; ComfyUI's CrossAttention does not.
    def _is_plain(self) -> bool:
        a = self.attention
        return (getattr(a, "norm_cross", None) is None
                and not getattr(a, "residual_connection", False)
                and getattr(a, "rescale_output_factor", 1.0) == 1.0
                and getattr(a, "spatial_norm", None) is None
                and getattr(a, "group_norm", None) is None)

    def forward(self, x, *args, **kwargs):
        context, value, mask = _split_call(self.attention, args, kwargs)
        exact = (context is not None and context.ndim == 3 and context.shape[1] == 1
                 and context.shape[0] == x.shape[0] and x.ndim == 3
                 and value is None and mask is None and self._is_plain())
        if not exact:
            if not self.stats["fallbacks"] and not torch.compiler.is_compiling():
                # Once per site: the shortcut would not be exact here, so this call is real attention.
                logging.warning("VCUT: a cross-attention got a context of shape %s (not one token, or a mask); it "
                                "runs real attention", None if context is None else tuple(context.shape))
            self.stats["fallbacks"] += 1
            return self.attention(x, *args, **kwargs)
        shape = (x.shape[0], x.shape[1], self.attention.to_out[0].out_features)
        if self.mode == "drop":
            return x.new_zeros(()).expand(shape)
        if torch.compiler.is_compiling():
            # Traced into the compiled graph: the cache's lookup (run lengths of data-dependent size,
            # element-wise equality, version counters) would break the graph and recompile, and one
            # compiled projection of a single token per row costs next to nothing.
            return self._project(context).expand(shape)
        return self.projection(context).expand(shape)

    def _project(self, context: torch.Tensor) -> torch.Tensor:
        """``to_out(to_v(context))``, every row."""
        projected = self.attention.to_v(context)
        for layer in self.attention.to_out:
            projected = layer(projected)
        return projected

    def projection(self, context: torch.Tensor) -> torch.Tensor:
        """``to_out(to_v(context))`` for ``context`` [N, 1, D], from the cache when possible."""
        rows, counts = run_length_rows(context)
        key = (context.shape, context.dtype, context.device,
               _linear_fingerprint(self.attention.to_v), _linear_fingerprint(self.attention.to_out[0]))
        for entry_id, (entry_key, entry_rows, entry_counts, projected) in self._cache.items():
            if (entry_key == key and entry_counts.shape == counts.shape and torch.equal(entry_counts, counts)
                    and torch.equal(entry_rows, rows)):
                self._cache.move_to_end(entry_id)
                self.stats["hits"] += 1
                return projected.repeat_interleave(counts, dim=0, output_size=context.shape[0])
        self.stats["misses"] += 1
        # Project every row, as the attention does, then keep one per run: the same GEMM shapes as the
        # original give the same rounding, so the result matches it bit for bit where the kernels allow.
        projected = self._project(context)[counts.cumsum(0) - counts]
        self._cache[object()] = (key, rows, counts, projected)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return projected.repeat_interleave(counts, dim=0, output_size=context.shape[0])


def _split_call(attention, args, kwargs):
    """(context, value, mask) of a call to ComfyUI's ``forward(x, context, value, mask)``
    or diffusers' ``forward(hidden_states, encoder_hidden_states, attention_mask)``."""
    names = ("encoder_hidden_states", "attention_mask") if hasattr(attention, "processor") \
        else ("context", "value", "mask")
    bound = dict(zip(names, args), **kwargs)
    mask = bound.get("mask", bound.get("attention_mask"))
    return bound.get("context", bound.get("encoder_hidden_states")), bound.get("value"), mask
