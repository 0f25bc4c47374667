"""Exact, cached replacement of a one-token cross-attention (VCUT, section III).

With a single key, softmax over the key axis is exactly 1, so

    attn2(x, ctx) = to_out(softmax(q k^T) v) = to_out(to_v(ctx))    (broadcast over queries)

for every query token. The projection depends on the context only, so it is
computed once per distinct context and served from a small cache afterwards.

Cache safety: an entry is served only when the new context is *equal*, element
for element, to the one it was computed from, and the projection weights are the
same tensors at the same version (in-place weight patches bump the version).
Entries live on one site's :class:`CachedProjection`, which belongs to one model. Contexts arrive as
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


class CachedProjection:
    """VCUT's shortcut for one cross-attention site: ``mode="linear"`` gives ``to_out(to_v(context))``
    broadcast over the query tokens, ``mode="drop"`` zeros (the paper's TCA removal). :meth:`output` returns
    ``None`` whenever the shortcut would not be exact (context with more than one token, a mask, a separate
    value tensor, diffusers' cross-norm or residual options): the caller then runs the real attention.
    Holds the site's cache; both the ComfyUI module wrapper and the diffusers processor use it."""

    def __init__(self, mode: str = "linear", max_entries: int = 4):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.max_entries = max_entries
        self._cache = OrderedDict()
        self.stats = {"hits": 0, "misses": 0, "fallbacks": 0}

    def output(self, attention: nn.Module, x, context, value=None, mask=None):
        """The attention's output for ``x`` and ``context`` by the shortcut, or ``None`` where it is not exact."""
        exact = (context is not None and context.ndim == 3 and context.shape[1] == 1
                 and context.shape[0] == x.shape[0] and x.ndim == 3
                 and value is None and mask is None and _is_plain(attention))
        if not exact:
            if not self.stats["fallbacks"] and not torch.compiler.is_compiling():
                # Once per site: the shortcut would not be exact here, so this call is real attention.
                logging.warning("VCUT: a cross-attention got a context of shape %s (not one token, or a mask); it "
                                "runs real attention", None if context is None else tuple(context.shape))
            self.stats["fallbacks"] += 1
            return None
        shape = (x.shape[0], x.shape[1], attention.to_out[0].out_features)
        if self.mode == "drop":
            return x.new_zeros(()).expand(shape)
        if torch.compiler.is_compiling():
            # Traced into the compiled graph: the cache's lookup (run lengths of data-dependent size,
            # element-wise equality, version counters) would break the graph and recompile, and one
            # compiled projection of a single token per row costs next to nothing.
            return _project(attention, context).expand(shape)
        return self.projection(attention, context).expand(shape)

    def projection(self, attention: nn.Module, context: torch.Tensor) -> torch.Tensor:
        """``to_out(to_v(context))`` for ``context`` [N, 1, D], from the cache when possible."""
        rows, counts = run_length_rows(context)
        key = (context.shape, context.dtype, context.device,
               _linear_fingerprint(attention.to_v), _linear_fingerprint(attention.to_out[0]))
        for entry_id, (entry_key, entry_rows, entry_counts, projected) in self._cache.items():
            if (entry_key == key and entry_counts.shape == counts.shape and torch.equal(entry_counts, counts)
                    and torch.equal(entry_rows, rows)):
                self._cache.move_to_end(entry_id)
                self.stats["hits"] += 1
                return projected.repeat_interleave(counts, dim=0, output_size=context.shape[0])
        self.stats["misses"] += 1
        # Project every row, as the attention does, then keep one per run: the same GEMM shapes as the
        # original give the same rounding, so the result matches it bit for bit where the kernels allow.
        projected = _project(attention, context)[counts.cumsum(0) - counts]
        self._cache[object()] = (key, rows, counts, projected)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return projected.repeat_interleave(counts, dim=0, output_size=context.shape[0])


def _project(attention: nn.Module, context: torch.Tensor) -> torch.Tensor:
    """``to_out(to_v(context))``, every row."""
    projected = attention.to_v(context)
    for layer in attention.to_out:
        projected = layer(projected)
    return projected


def _is_plain(attention: nn.Module) -> bool:
    """No option of diffusers' ``Attention`` that the shortcut leaves out (ComfyUI's has none of them)."""
    return (getattr(attention, "norm_cross", None) is None
            and not getattr(attention, "residual_connection", False)
            and getattr(attention, "rescale_output_factor", 1.0) == 1.0
            and getattr(attention, "spatial_norm", None) is None
            and getattr(attention, "group_norm", None) is None)


class CachedProjectionCrossAttention(nn.Module):
    """Drop-in module for a cross-attention (ComfyUI ``CrossAttention``, patched in as an object patch):
    :class:`CachedProjection` where it is exact, the original module otherwise. The diffusers path sets a
    processor instead (``diffusers_svd.CachedProjectionProcessor``)."""

    def __init__(self, attention: nn.Module, mode: str = "linear", max_entries: int = 4):
        super().__init__()
        self.attention = attention
        self.shortcut = CachedProjection(mode, max_entries)

    @property
    def mode(self) -> str:
        return self.shortcut.mode

    @property
    def wrapped(self) -> nn.Module:
        """The module this one wraps (every pack wrapper has ``wrapped``: a patch can be undone or replaced)."""
        return self.attention

    def forward(self, x, *args, **kwargs):
        context, value, mask = _split_call(args, kwargs)
        out = self.shortcut.output(self.attention, x, context, value, mask)
        return self.attention(x, *args, **kwargs) if out is None else out


def _split_call(args, kwargs):
    """(context, value, mask) of a call to ComfyUI's ``CrossAttention.forward(x, context, value, mask)``."""
    bound = dict(zip(("context", "value", "mask"), args), **kwargs)
    return bound.get("context"), bound.get("value"), bound.get("mask")
