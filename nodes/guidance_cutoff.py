"""Guidance cutoff (VCUT eq. 4) in ComfyUI: classifier-free guidance only in the first c steps.

Steps ``0 .. c-1`` run the usual two passes (cond and uncond). From step ``c`` on
the UNet runs once per model evaluation. On a model whose cross-attention reads one
token (``average_context``), its context is the mean of the cond and uncond contexts: the SCA/TCA outputs are the affine map
``L(ctx) = to_out(to_v(ctx))``, and ``L(mean(a, b)) = mean(L(a), L(b))``, which is
eq. 4's ``M = 1/2 (L_cond + L_uncond)``. Other conditioning (the init-image
latent, the added time ids) is the cond's. The one result stands for both cond
and uncond: the denoised output of such an evaluation is that result, whatever
guidance rule (plain CFG, SVD's per-frame linear CFG) would have combined them.
On a model that reads many tokens (a text model such as ETC's SD 2.x) no mean of the
contexts is exact (attention is not linear in a context of many keys), so a cut
evaluation runs the conditional branch alone: the cond chunks, never the uncond's.

ComfyUI calls the model either with cond and uncond in one batch or, when free
memory is short, as two calls (uncond first). :class:`ComfyGuidanceCutoff` handles
both and gives the same result: in a batched call it runs the cond chunk with the
mean context; in separate calls the uncond call only records its context and the
cond call runs with the mean. Its post-CFG function then returns that one result
as the evaluation's output. Which step an evaluation belongs to comes from a plan
(``vcut_core.step_plan``, made by :mod:`.cutoff_hooks`); with no plan, every evaluation stays guided.

Stacking with caches. The one pass carries ``cond_or_uncond == [cond]`` and, in
``transformer_options["uuids"]``, the uuid of the evaluation's first call only: a
cache that slices the batch by ``len(uuids)`` sees one chunk, and one that follows
the first uuid it met (EasyCache) keeps following the pass that still reaches the
UNet. A cache that skips whole evaluations before they reach this wrapper
(LazyCache) would make a count kept here fall behind the plan, so a host that can
see every evaluation calls :meth:`ComfyGuidanceCutoff.start_evaluation` instead.
"""
import logging

import torch

from ..vcut_core.cached_projection import mean_context

CROSS_ATTENTION_KEYS = ("c_crossattn", "time_context")
COND, UNCOND = 0, 1


def mean_contexts(cond_c: dict, uncond_c: dict) -> dict:
    """The cond's conditioning with each cross-attention context replaced by the cond/uncond mean."""
    merged = dict(cond_c)
    for key in CROSS_ATTENTION_KEYS:
        if key in cond_c:
            if uncond_c.get(key) is None or uncond_c[key].shape != cond_c[key].shape:
                raise ValueError(f"VCUT guidance cutoff: the cond and uncond '{key}' differ in shape; "
                                 "the cutoff needs SVD's one-token image conditioning on both")
            merged[key] = mean_context(cond_c[key], uncond_c[key])
    return merged


def select_chunks(c: dict, batch: int, chunks: int, indices) -> dict:
    """Chunks ``indices`` of every batched tensor in ``c`` (ComfyUI concatenates cond chunks)."""
    return {key: torch.cat([value.chunk(chunks)[i] for i in indices])
            if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch else value
            for key, value in c.items()}


def _single_call(args, c, first_call_c):
    """The cut evaluation's one pass, labelled as the cond and with the uuid of the evaluation's first
    call (``first_call_c``'s), so caches keyed on the batch's uuids follow it (see the module's notes)."""
    options = dict(c.get("transformer_options", {}))
    options["cond_or_uncond"] = [COND]
    uuids = first_call_c.get("transformer_options", {}).get("uuids")
    if uuids:
        options["uuids"] = list(uuids[:1])
    return dict(args, c=dict(c, transformer_options=options), cond_or_uncond=[COND])


class ComfyGuidanceCutoff:
    """ComfyUI ``model_function_wrapper`` plus post-CFG function implementing the cutoff.

    ``previous`` is a wrapper already set on the model; it is called in place of
    ``apply_model`` so patches compose. ``set_plan`` starts a sampling run; the
    post-CFG function ends each evaluation. ``find_plan``, when given, is asked for a
    plan when an evaluation arrives without one (hosts that offer no hook at the
    start of sampling).
    """

    def __init__(self, cutoff_step: int, previous=None, find_plan=None, average_context=True):
        self.cutoff_step = int(cutoff_step)
        self.average_context = average_context
        self.previous, self.find_plan = previous, find_plan
        self.set_plan(None)

    def set_plan(self, plan, run=None, counted_by_sampler=False):
        """Start a run with ``plan``. ``counted_by_sampler``: the host calls :meth:`start_evaluation`
        before every evaluation (also those a cache answers without calling the model)."""
        self.plan, self.run, self.warned = plan, run, False
        self.counted_by_sampler = counted_by_sampler
        self.evaluation = -1 if counted_by_sampler else 0
        self._clear_evaluation()

    def _clear_evaluation(self):
        self.cut_sigma = self.pending_uncond = self.guided_sigma = None

    def start_evaluation(self):
        """The sampler asks for its next evaluation (called by the host when it counts them)."""
        self.evaluation += 1
        self._clear_evaluation()

    def _apply(self, apply_model, args):
        if self.previous is not None:
            return self.previous(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    def step(self, sigma: float):
        """Step of the current evaluation, or ``None`` when it is not known."""
        if self.find_plan is not None:
            found = self.find_plan(self.run)
            if found is not None:
                self.set_plan(*found)
        if self.plan is None or not 0 <= self.evaluation < len(self.plan):
            if not self.warned:
                logging.warning("VCUT guidance cutoff: this sampler's steps are not known here (see the node's "
                                "tooltip); guidance stays on for this run")
                self.warned = True
            return None
        expected = self.plan[self.evaluation]
        if abs(expected.sigma - sigma) > 1e-6 * max(abs(sigma), 1.0):
            logging.warning("VCUT guidance cutoff: the sampler left its planned schedule (sigma %.6g, planned "
                            "%.6g); guidance stays on for the rest of this run", sigma, expected.sigma)
            self.plan = None
            return None
        return expected.step

    def __call__(self, apply_model, args):
        cond_or_uncond = list(args["cond_or_uncond"])
        sigma = float(args["timestep"].flatten()[0])
        step = self.step(sigma)
        if step is None or step < self.cutoff_step:
            return self._apply(apply_model, args)
        x, c = args["input"], args["c"]
        if not self.average_context:
            return self._conditional_alone(apply_model, args, cond_or_uncond, sigma)
        if sorted(cond_or_uncond) == [COND, UNCOND]:
            chunks = len(cond_or_uncond)
            i_cond, i_uncond = cond_or_uncond.index(COND), cond_or_uncond.index(UNCOND)
            merged = mean_contexts(select_chunks(c, x.shape[0], chunks, [i_cond]),
                                   select_chunks(c, x.shape[0], chunks, [i_uncond]))
            single = _single_call(args, merged, c)
            single.update(input=x.chunk(chunks)[i_cond], timestep=args["timestep"].chunk(chunks)[i_cond])
            out = self._apply(apply_model, single)
            self.cut_sigma = sigma
            return torch.cat([out] * chunks)
        if cond_or_uncond == [UNCOND] and self.guided_sigma != sigma:
            # Run apart, uncond first: keep its context for the cond call; this output is never used.
            self.pending_uncond = (sigma, c)
            return torch.zeros_like(x)
        if cond_or_uncond == [COND] and self.pending_uncond and self.pending_uncond[0] == sigma:
            uncond_c = self.pending_uncond[1]
            out = self._apply(apply_model, _single_call(args, mean_contexts(c, uncond_c), uncond_c))
            self.pending_uncond, self.cut_sigma = None, sigma
            return out
        # A cond call that came first (or without any uncond: cfg 1) runs as it is, and so does its uncond.
        self.guided_sigma = sigma
        return self._apply(apply_model, args)

    def _conditional_alone(self, apply_model, args, cond_or_uncond, sigma):
        """A cut call on a many-token model: the cond chunks run (every cond entry, e.g. per-frame masked
        prompts), the uncond ones do not; each uncond chunk is given the first cond chunk's output, so any
        guidance rule combines them into the cond's prediction (the post-CFG function returns it anyway)."""
        self.cut_sigma = sigma
        x = args["input"]
        keep = [i for i, kind in enumerate(cond_or_uncond) if kind != UNCOND]
        if not keep:  # an uncond call of its own (low memory): its output is never used
            return torch.zeros_like(x)
        if len(keep) == len(cond_or_uncond):
            return self._apply(apply_model, args)
        chunks = len(cond_or_uncond)
        c = select_chunks(args["c"], x.shape[0], chunks, keep)
        options = dict(c.get("transformer_options", {}))
        options["cond_or_uncond"] = [cond_or_uncond[i] for i in keep]
        if options.get("uuids"):
            options["uuids"] = [options["uuids"][i] for i in keep]
        out = self._apply(apply_model, dict(
            args, input=torch.cat([x.chunk(chunks)[i] for i in keep]), c=dict(c, transformer_options=options),
            timestep=torch.cat([args["timestep"].chunk(chunks)[i] for i in keep]),
            cond_or_uncond=options["cond_or_uncond"])).chunk(len(keep))
        return torch.cat([out[keep.index(i)] if i in keep else out[0] for i in range(chunks)])

    def post_cfg(self, args):
        """Ends an evaluation: a cut evaluation's output is its single pass."""
        sigma = float(args["sigma"].flatten()[0])
        cut = self.cut_sigma == sigma
        self._clear_evaluation()
        if not self.counted_by_sampler:
            self.evaluation += 1
        return args["cond_denoised"] if cut else args["denoised"]
