"""Test-only node pack: tiny seeded models and probes for the ETC/VCUT test graphs."""
import json
import os
import shutil

import folder_paths
import torch
from safetensors.torch import save_file

from .tiny_models import (meta_sd21, tiny_clip_vision, tiny_sd2, tiny_sv3d, tiny_svd, tiny_svd_zero_tca,
                          tiny_zero123, write_checkpoint)


class TinySVDLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("MODEL", "CLIP_VISION", "VAE")
    FUNCTION = "load"
    CATEGORY = "testing/etc_vcut"

    def load(self, seed):
        return tiny_svd(seed)


class TinySVDZeroTCALoader(TinySVDLoader):
    """The tiny SVD with every temporal cross-attention's output projection zeroed."""

    def load(self, seed):
        return tiny_svd_zero_tca(seed)


class TinySV3DLoader:
    """A tiny SV3D_u or SV3D_p (SVD's UNet, camera in y)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "variant": (["u", "p"], {"default": "u"})}}

    RETURN_TYPES = ("MODEL", "CLIP_VISION", "VAE")
    FUNCTION = "load"
    CATEGORY = "testing/etc_vcut"

    def load(self, seed, variant):
        return tiny_sv3d(seed, variant)


class TinyZero123Loader(TinySVDLoader):
    """A tiny Stable Zero123 (SD 1.x UNet, one context token through cc_projection)."""

    def load(self, seed):
        return tiny_zero123(seed)


class TinySD2Loader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "testing/etc_vcut"

    def load(self, seed):
        return tiny_sd2(seed)


class TinyCLIPVisionLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "projection_dim": ("INT", {"default": 64, "min": 8, "max": 4096})}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"
    CATEGORY = "testing/etc_vcut"

    def load(self, seed, projection_dim):
        return (tiny_clip_vision(seed + 1, projection_dim),)


class RandomConditioning:
    """CONDITIONING of seeded random tokens, for a checkpoint whose text encoder is not in the file."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31}),
                             "dim": ("INT", {"default": 1024, "min": 8, "max": 4096}),
                             "tokens": ("INT", {"default": 77, "min": 1, "max": 1024})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing/etc_vcut"

    def make(self, seed, dim, tokens):
        generator = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, dim, generator=generator), {}]],)


class WriteCheckpoints:
    """Writes detectable SVD-layout and SD 2.x checkpoints to models/checkpoints (for the stock loaders)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "write"
    CATEGORY = "testing/etc_vcut"

    def write(self, seed):
        # The instance folder is the one holding custom_nodes/ (this pack is linked, not copied, there).
        instance = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        folder = os.path.join(instance, "models", "checkpoints")
        if folder not in folder_paths.get_folder_paths("checkpoints"):
            folder = folder_paths.get_folder_paths("checkpoints")[0]
        written = []
        for kind in ("svd", "sd2"):
            path = os.path.join(folder, f"etcvcut_test_{kind}.safetensors")
            if not os.path.exists(path):
                write_checkpoint(path, kind, seed)
            written.append(os.path.basename(path))
        return {"ui": {"checkpoints": written}}


class TinyCLIPLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing/etc_vcut"

    def load(self, seed):
        return (tiny_sd2(seed)[1],)


_recorder = {"calls": None, "path": None, "prompt": None}


def _prompt_id():
    """The prompt the server runs now: progress steps of later prompts that never call the counted model (other
    tests' graphs on the same server) are not recorded into this one's file."""
    import server
    return server.PromptServer.instance.last_prompt_id


def _flush():
    with open(_recorder["path"], "w") as f:
        json.dump(_recorder["calls"], f)


def _record_progress(hook):
    """Progress-bar hook that also logs each sampler step ('progress': i + 1) among the recorded calls."""
    def recording_hook(value, total, *args, **kwargs):
        if _recorder["calls"] is not None and _recorder["prompt"] == _prompt_id():
            _recorder["calls"].append({"progress": int(value)})
            _flush()
        if hook is not None:
            return hook(value, total, *args, **kwargs)
    recording_hook.records_progress = True
    return recording_hook


class CountUNetPasses:
    """Records every UNet call (sigma, batch, cond_or_uncond) and every sampler progress step, in order,
    to a JSON file in the output folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "filename": ("STRING", {"default": "passes.json"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing/etc_vcut"

    def patch(self, model, filename):
        import comfy.utils
        path = os.path.join(folder_paths.get_output_directory(), filename)
        calls = []
        _recorder.update(calls=calls, path=path, prompt=_prompt_id())
        if not getattr(comfy.utils.PROGRESS_BAR_HOOK, "records_progress", False):
            comfy.utils.set_progress_bar_global_hook(_record_progress(comfy.utils.PROGRESS_BAR_HOOK))

        def wrapper(apply_model, args):
            out = apply_model(args["input"], args["timestep"], **args["c"])
            calls.append({"sigma": float(args["timestep"].flatten()[0]), "batch": int(args["input"].shape[0]),
                          "cond_or_uncond": list(args["cond_or_uncond"]),
                          "input_sum": args["input"].chunk(len(args["cond_or_uncond"]))[0].double().sum().item(),
                          "output_sums": [o.double().sum().item() for o in out.chunk(len(args["cond_or_uncond"]))]})
            _recorder.update(calls=calls, path=path, prompt=_prompt_id())
            _flush()
            return out

        m = model.clone()
        m.set_model_unet_function_wrapper(wrapper)
        return (m,)


class _ModelPatchNode:
    """A MODEL -> MODEL test node; subclasses define ``patch(model)``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing/etc_vcut"


class _RecordForwards(torch.nn.Module):
    """The UNet's first convolution, logging the batch of every UNet forward that really runs among the
    events of ETCVCUTTestCountPasses (each forward comes before the call it belongs to)."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        if _recorder["calls"] is not None:
            _recorder["calls"].append({"forward_batch": int(x.shape[0])})
            _flush()
        return self.conv(x)


class CountUNetForwards(_ModelPatchNode):
    """Logs every UNet forward that runs, inside every wrapper (a step a cache answers from its cache runs
    none), into ETCVCUTTestCountPasses' file; use it with that node."""

    def patch(self, model):
        name = "diffusion_model.input_blocks.0.0"
        m = model.clone()
        conv = getattr(m, "object_patches_backup", {}).get(name) or m.model.get_submodule(name)
        while isinstance(conv, _RecordForwards):
            conv = conv.conv
        m.add_object_patch(name, _RecordForwards(conv))
        return (m,)


class CompileEager(_ModelPatchNode):
    """Core's torch.compile wrapper (what TorchCompileModel sets) with dynamo's "eager" backend: the same
    tracing, graph breaks and recompiles as inductor, without its minutes of code generation on a CPU."""

    def patch(self, model):
        from comfy_api.torch_helpers import set_torch_compile_wrapper  # ComfyUI 0.3.x and later only
        m = model.clone()
        set_torch_compile_wrapper(model=m, backend="eager")
        return (m,)


class LowFreeMemory(_ModelPatchNode):
    """Makes every batch look too big for free memory, so ComfyUI runs cond and uncond as separate calls
    (what it does for SVD at 576x1024 on 8-24 GB GPUs)."""

    def patch(self, model):
        m = model.clone()
        m.add_object_patch("memory_required", lambda *args, **kwargs: 1e30)
        return (m,)


class SaveTensors:
    """Writes a LATENT's samples and/or an IMAGE to output/<prefix>.safetensors for exact comparison."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"prefix": ("STRING", {"default": "tensors"})},
                "optional": {"latent": ("LATENT",), "image": ("IMAGE",)}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = "testing/etc_vcut"

    def save(self, prefix, latent=None, image=None):
        tensors = {}
        if latent is not None:
            tensors["latent"] = latent["samples"].float().contiguous()
        if image is not None:
            tensors["image"] = image.float().contiguous()
        save_file(tensors, os.path.join(folder_paths.get_output_directory(), f"{prefix}.safetensors"))
        return {"ui": {"tensors": [{"filename": f"{prefix}.safetensors"}]}}


class ShapeLatent:
    """A LATENT of any shape that holds no memory (one zero, expanded): lets a test hand a node a grid of
    hundreds of gigabytes to refuse without allocating it."""

    @classmethod
    def INPUT_TYPES(cls):
        big = {"default": 8, "min": 1, "max": 1 << 20}
        return {"required": {"batch": ("INT", big), "height": ("INT", big), "width": ("INT", big)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "testing/etc_vcut"

    def make(self, batch, height, width):
        return ({"samples": torch.zeros(()).expand(batch, 4, height, width)},)


class MetaSD21:
    """SD 2.1's UNet layout on the meta device: the full model's shape, no weights (memory-estimate tests)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing/etc_vcut"

    def load(self):
        return (meta_sd21(),)


class Tone:
    """A sine tone as ComfyUI's AUDIO dict ({"waveform": [1, C, S], "sample_rate"}), for hosts without audio
    nodes (LoadAudio needs torchaudio)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seconds": ("FLOAT", {"default": 2.0}), "sample_rate": ("INT", {"default": 16000}),
                             "channels": ("INT", {"default": 1, "min": 1, "max": 8})}}

    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "make"
    CATEGORY = "testing/etc_vcut"

    def make(self, seconds, sample_rate, channels):
        t = torch.arange(round(seconds * sample_rate)) / sample_rate
        return ({"waveform": (0.3 * torch.sin(2 * torch.pi * 440 * t)).repeat(1, channels, 1),
                 "sample_rate": sample_rate},)


class FakeDiskFree:
    """Makes shutil.disk_usage report ``free_mib`` free for paths containing ``marker`` once ``after_calls``
    calls for them passed (a disk that fills up during a run); free_mib < 0 removes the fake."""
    real = shutil.disk_usage

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"marker": ("STRING", {"default": "disk_full"}),
                             "after_calls": ("INT", {"default": 0, "min": 0, "max": 1000}),
                             "free_mib": ("INT", {"default": 1, "min": -1, "max": 1 << 20})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "fake"
    CATEGORY = "testing/etc_vcut"

    def fake(self, marker, after_calls, free_mib):
        real, calls = FakeDiskFree.real, []

        def disk_usage(path):
            usage = real(path)
            if marker in str(path):
                calls.append(path)
                if len(calls) > after_calls:
                    return usage._replace(free=free_mib * 2**20)
            return usage
        shutil.disk_usage = real if free_mib < 0 else disk_usage
        return {"ui": {"faked": [free_mib]}}


NODE_CLASS_MAPPINGS = {
    "ETCVCUTTestTinySVD": TinySVDLoader,
    "ETCVCUTTestZeroTCA": TinySVDZeroTCALoader,
    "ETCVCUTTestTinySD2": TinySD2Loader,
    "ETCVCUTTestTinySV3D": TinySV3DLoader,
    "ETCVCUTTestTinyZero123": TinyZero123Loader,
    "ETCVCUTTestTinyCLIPVision": TinyCLIPVisionLoader,
    "ETCVCUTTestTinyCLIP": TinyCLIPLoader,
    "ETCVCUTTestCountPasses": CountUNetPasses,
    "ETCVCUTTestCountForwards": CountUNetForwards,
    "ETCVCUTTestCompileEager": CompileEager,
    "ETCVCUTTestLowFreeMemory": LowFreeMemory,
    "ETCVCUTTestRandomConditioning": RandomConditioning,
    "ETCVCUTTestWriteCheckpoints": WriteCheckpoints,
    "ETCVCUTTestSaveTensors": SaveTensors,
    "ETCVCUTTestTone": Tone,
    "ETCVCUTTestShapeLatent": ShapeLatent,
    "ETCVCUTTestMetaSD21": MetaSD21,
    "ETCVCUTTestFakeDiskFree": FakeDiskFree,
}
