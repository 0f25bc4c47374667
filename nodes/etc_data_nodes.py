"""ComfyUI node for ETC's data preparation (category video/ETC): the CLIP-score video filter.

Paths follow nodes/paths.py: the manifest under input/ or models/, the CLIP by name, the result under output/.
"""
import os

from ..etc_core.data.manifest import read_manifest
from ..etc_core.data.video_filter import check_filter_output, filter_videos, load_clip
from ..etc_core.files.media_header import MAX_FRAME_PIXELS
from .node_spec import Input, NodeSpec, Output, mappings, node
from .paths import allowed_roots, clip_folder, clip_folders, input_path, output_path, server_paths_hidden
from .shared_inputs import ETC_CATEGORY as CATEGORY


@node(NodeSpec(
    "ETCVideoFilter", "ETC Video Filter (CLIP score)", CATEGORY,
    "ETC eq. 5: scores every caption-video pair by CLIP (the mean over sampled frames of the scaled cosine "
    "similarity of frame and caption) and keeps the top alpha fraction; scores are saved as they come, so a "
    "second run resumes.",
    "run",
    inputs=(
        Input("manifest", "STRING", "JSONL of {\"video\": path, \"caption\": text}, or a folder of videos with "
              "same-name .txt captions, under input/ or models/", {"default": ""}),
        Input("output", "STRING", "kept JSONL under ComfyUI's output/; scores go to <output>.scores.jsonl",
              {"default": "etc_data/kept.jsonl"}),
        Input("alpha", "FLOAT", "fraction of the readable caption-video pairs to keep (rounded up), 0.001-1; "
              "unreadable videos are left out",
              {"default": 0.3, "min": 0.001, "max": 1.0, "step": 0.01}),
        Input("clip", lambda: sorted(clip_folders()), "CLIP folder (transformers format, config.json inside) in "
              "models/clip_vision or models/clip"),
        Input("frames", "INT", "frames sampled evenly from each video for its score, 1-64",
              {"default": 8, "min": 1, "max": 64}),
        Input("max_frame_pixels", "INT", "videos whose frames have more pixels (read from the container, before "
              "decoding) are left out, with the reason in <output>.scores.jsonl",
              {"default": MAX_FRAME_PIXELS, "min": 64, "max": 2**40}, optional=True)),
    outputs=(Output("STRING", "the kept JSONL's path under output/ (best pairs first); the trainer reads data "
                    "from input/ or models/: copy it there", "kept_manifest"),
             Output("INT", "how many caption-video pairs were kept", "kept")),
    output_node=True, experimental=True))
class ETCVideoFilter:
    def run(self, manifest, output, alpha, clip, frames, max_frame_pixels=MAX_FRAME_PIXELS):
        with server_paths_hidden():
            return self._run(manifest, output, alpha, clip, frames, max_frame_pixels)

    def _run(self, manifest, output, alpha, clip, frames, max_frame_pixels):
        import comfy.utils
        manifest = input_path(manifest, "manifest")
        output = output_path(output, "output")
        clip_path = clip_folder(clip)
        entries, _ = read_manifest(manifest, "video", allowed_roots())
        check_filter_output(output)
        model, processor = load_clip(clip_path)
        os.makedirs(os.path.dirname(output), exist_ok=True)
        bar = comfy.utils.ProgressBar(len(entries))
        kept = filter_videos(entries, output, alpha, model, processor, frames,
                             progress=lambda i, n: bar.update_absolute(i, n), max_pixels=max_frame_pixels)
        return {"ui": {"text": [f"kept {len(kept)} of {len(entries)}"]}, "result": (output, len(kept))}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(ETCVideoFilter)
