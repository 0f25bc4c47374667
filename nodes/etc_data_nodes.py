"""ComfyUI node for ETC's data preparation (category video/ETC): the CLIP-score video filter."""
import os

from ..etc_core.manifest import read_manifest
from ..etc_core.video_filter import filter_videos

CATEGORY = "video/ETC"


class ETCVideoFilter:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "manifest": ("STRING", {"default": "", "tooltip": "JSONL of {\"video\": path, \"caption\": text}"}),
            "output": ("STRING", {"default": "", "tooltip": "kept JSONL; scores go to <output>.scores.jsonl"}),
            "alpha": ("FLOAT", {"default": 0.3, "min": 0.001, "max": 1.0, "step": 0.01,
                                "tooltip": "fraction of the readable videos to keep"}),
            "clip_path": ("STRING", {"default": "", "tooltip": "local CLIP folder (transformers format)"}),
            "frames": ("INT", {"default": 8, "min": 1, "max": 64}),
        }}

    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("kept_manifest", "kept")
    OUTPUT_NODE = True
    FUNCTION = "run"
    CATEGORY = CATEGORY
    DESCRIPTION = "ETC eq. 5: CLIP score per caption-video pair, keep the top alpha fraction (resumable)."

    def run(self, manifest, output, alpha, clip_path, frames):
        import comfy.utils
        from transformers import CLIPModel, CLIPProcessor
        for name, path in (("manifest", manifest), ("clip_path", clip_path)):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{name} {path!r} does not exist; give an absolute path")
        if not output:
            raise ValueError("output is empty; give the path of the kept-manifest JSONL to write")
        model = CLIPModel.from_pretrained(clip_path, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(clip_path, local_files_only=True)
        entries = read_manifest(manifest, ("video", "caption"))
        bar = comfy.utils.ProgressBar(len(entries))
        kept = filter_videos(entries, output, alpha, model, processor, frames,
                             progress=lambda i, n: bar.update_absolute(i, n))
        return {"ui": {"text": [f"kept {len(kept)} of {len(entries)}"]}, "result": (output, len(kept))}


NODE_CLASS_MAPPINGS = {"ETCVideoFilter": ETCVideoFilter}
NODE_DISPLAY_NAME_MAPPINGS = {"ETCVideoFilter": "ETC Video Filter (CLIP score)"}
