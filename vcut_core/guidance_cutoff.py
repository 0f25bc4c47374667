"""Guidance cutoff (VCUT eq. 4): classifier-free guidance only in the first c steps.

Steps ``0 .. c-1`` run the usual two passes (cond and uncond). From step ``c`` on
the UNet runs once per step. Its cross-attention context is the mean of the cond
and uncond contexts: the SCA/TCA outputs are the affine map
``L(ctx) = to_out(to_v(ctx))``, and ``L(mean(a, b)) = mean(L(a), L(b))``, which is
eq. 4's ``M = 1/2 (L_cond + L_uncond)``. Other conditioning (the init-image
latent, the added time ids) is the cond's. The one result stands for both cond
and uncond, so any guidance rule (including SVD's per-frame linear CFG) returns
it unchanged: ``u + s * (c - u) = c`` when ``c = u``.
"""
import torch

CROSS_ATTENTION_KEYS = ("c_crossattn", "time_context")
COND, UNCOND = 0, 1


def step_index(sigma: float, sigmas) -> int:
    """Index of the sampler step evaluated at noise level ``sigma``.

    ``sigmas`` is the sampler's schedule, decreasing. An evaluation at a sigma
    between two entries (a midpoint of a two-stage sampler) belongs to the step
    that starts above it: the largest ``i`` with ``sigmas[i] >= sigma``.
    """
    sigmas = [float(s) for s in sigmas]
    tolerance = 1e-5 * max(abs(sigma), 1e-8)
    index = 0
    for i, s in enumerate(sigmas[:-1]):
        if s + tolerance >= sigma:
            index = i
    return index


class StepCounter:
    """Step numbers for hosts that do not pass the sampler's schedule to the model.

    Counts distinct noise levels in the order they arrive; a rise in sigma starts
    a new sampling run. Exact for samplers that evaluate the model only at the
    schedule's sigmas (Euler, DPM++ 2M, LCM, Heun, ...).
    """

    def __init__(self):
        self.last = None
        self.step = -1

    def __call__(self, sigma: float) -> int:
        if self.last is None or sigma > self.last * (1 + 1e-6):
            self.step = 0
        elif sigma < self.last * (1 - 1e-6):
            self.step += 1
        self.last = sigma
        return self.step


def merge_cond_uncond(c: dict, batch: int, cond_or_uncond: list) -> dict:
    """Conditioning for the single pass: the cond chunk, with cross-attention
    contexts averaged over the cond and uncond chunks."""
    chunks = len(cond_or_uncond)
    i_cond, i_uncond = cond_or_uncond.index(COND), cond_or_uncond.index(UNCOND)
    merged = {}
    for key, value in c.items():
        if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch:
            parts = value.chunk(chunks)
            if key in CROSS_ATTENTION_KEYS:
                merged[key] = (parts[i_cond] + parts[i_uncond]) * 0.5
            else:
                merged[key] = parts[i_cond]
        else:
            merged[key] = value
    return merged


class ComfyGuidanceCutoff:
    """A ComfyUI ``model_function_wrapper`` implementing the cutoff.

    ``previous`` is a wrapper that was already set on the model; it is called in
    place of ``apply_model`` so patches compose.
    """

    def __init__(self, cutoff_step: int, previous=None):
        self.cutoff_step = int(cutoff_step)
        self.previous = previous
        self.counter = StepCounter()

    def _run(self, apply_model, args):
        if self.previous is not None:
            return self.previous(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    def current_step(self, args) -> int:
        sigma = float(args["timestep"].flatten()[0])
        sigmas = args["c"].get("transformer_options", {}).get("sample_sigmas")
        step = self.counter(sigma)
        return step if sigmas is None else step_index(sigma, sigmas)

    def __call__(self, apply_model, args):
        cond_or_uncond = list(args["cond_or_uncond"])
        step = self.current_step(args)
        if step < self.cutoff_step or COND not in cond_or_uncond or UNCOND not in cond_or_uncond \
                or len(cond_or_uncond) != 2:
            return self._run(apply_model, args)
        x = args["input"]
        chunks = len(cond_or_uncond)
        i_cond = cond_or_uncond.index(COND)
        c = merge_cond_uncond(args["c"], x.shape[0], cond_or_uncond)
        options = dict(c.get("transformer_options", {}))
        options["cond_or_uncond"] = [COND]
        c["transformer_options"] = options
        single = {"input": x.chunk(chunks)[i_cond], "timestep": args["timestep"].chunk(chunks)[i_cond],
                  "c": c, "cond_or_uncond": [COND]}
        out = self._run(apply_model, single)
        return torch.cat([out] * chunks)
