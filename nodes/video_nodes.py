"""ETCSaveVideo: frames -> H.264 MP4, VP9 WebM or animated WEBP with the workflow embedded (etc_core.files.video_io).

The node's ``ui`` output serves both ComfyUI frontends with one dict, ``{"images": [...], "animated": [True]}``
(what core SaveVideo/SaveWEBM return):

- the saved file comes first: the current frontend (1.x) plays it in a ``<video>`` on the node. It picks
  its video preview only when no listed filename contains "webp" or "png";
- for MP4/WebM, an animated GIF of the frames in ComfyUI's temp folder comes second: the early-2024
  frontend loads every listed file as an ``<img>`` and keeps those that load, so it shows the GIF (a WEBP
  preview would flip the current frontend to its image preview). Both frontends drop entries that fail to
  load in their element, so each shows exactly one preview;
- a WEBP file is an image to both frontends and is listed alone.
"""
import os

from ..etc_core.files.messages import quote
from ..etc_core.files.safe_paths import check_no_nul
from ..etc_core.files.video_io import EXTENSIONS, FORMATS, MAX_CRF, ImageFrames, write_gif, write_video
from .node_spec import Input, NodeSpec, mappings, node
from .shared_inputs import ETC_CATEGORY as CATEGORY

# A file name has at most 255 bytes on the usual file systems; the node adds "_00001_", the preview's
# "_preview", the extension and ".partial" (up to 28 bytes) to the prefix's last part.
NAME_MAX_BYTES = 255
ADDED_BYTES = 28


def check_prefix(prefix: str):
    """Refuse a filename_prefix that cannot name a file, before anything is written: a NUL byte (PyAV
    would write to the name cut there, replacing an existing file) or a part too long for a file name."""
    check_no_nul("filename_prefix", prefix)
    parts = prefix.replace("\\", "/").split("/")
    for index, part in enumerate(parts):
        limit = NAME_MAX_BYTES - (ADDED_BYTES if index == len(parts) - 1 else 0)
        if len(part.encode("utf-8")) > limit:
            raise ValueError(f"filename_prefix {quote(prefix)}: the part {quote(part)} is {len(part.encode('utf-8'))} "
                             f"bytes, longer than the {limit} a file name can take here; shorten it")


def _entry(filename: str, subfolder: str, folder_type: str) -> dict:
    return {"filename": filename, "subfolder": subfolder, "type": folder_type}


def _preview(frames, frame_rate: float, name: str) -> dict:
    """The GIF for image-only frontends, in ComfyUI's temp folder."""
    import folder_paths
    temp_dir = folder_paths.get_temp_directory()
    full_dir, base, counter, subfolder, _ = folder_paths.get_save_image_path(f"{name}_preview", temp_dir)
    filename = f"{base}_{counter:05}_.gif"
    write_gif(os.path.join(full_dir, filename), frames, frame_rate)
    return _entry(filename, subfolder, "temp")


@node(NodeSpec(
    "ETCSaveVideo", "ETC Save Video (MP4/WebM/WEBP)", CATEGORY,
    "Writes the frames as H.264 MP4, VP9 WebM or animated WEBP with the prompt and workflow embedded (drop the "
    "file on ComfyUI to get the graph back) and shows it on the node.",
    "save",
    inputs=(
        Input("images", "IMAGE", "the frames in order; the whole batch becomes one video"),
        Input("filename_prefix", "STRING", "file name under ComfyUI's output/, subfolders allowed ('ETC/video'); "
              "a counter and the extension are added", {"default": "ETC/video"}),
        Input("frame_rate", "FLOAT", "frames per second of the file, 0.1-240",
              {"default": 8.0, "min": 0.1, "max": 240.0, "step": 0.1}),
        Input("format", lambda: list(FORMATS), "h264-mp4 plays everywhere; vp9-webm is smaller; webp is an "
              "animated image (no audio)", {"default": FORMATS[0]}, optional=True),
        Input("crf", "INT", "lower = better and bigger: H.264 0-51, VP9 0-63, WEBP 0-100 (quality = 100 - crf)",
              {"default": 19, "min": 0, "max": max(MAX_CRF.values())}, optional=True),
        Input("audio", "AUDIO", "optional soundtrack, cut to the video's length (MP4: AAC, WebM: Opus)",
              optional=True)),
    output_node=True, hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}))
class ETCSaveVideo:
    def save(self, images, filename_prefix, frame_rate, format=FORMATS[0], crf=19, audio=None, prompt=None,
             extra_pnginfo=None):
        import folder_paths
        from comfy.cli_args import args
        check_prefix(filename_prefix)
        full_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), images.shape[2], images.shape[1])
        filename = f"{name}_{counter:05}_.{EXTENSIONS[format]}"
        frames = ImageFrames(images)  # converted frame by frame while encoding, never as a whole batch
        soundtrack = None if audio is None else (audio["waveform"][0].float().cpu().numpy(), audio["sample_rate"])
        metadata = {} if args.disable_metadata else {"prompt": prompt, **(extra_pnginfo or {})}
        write_video(os.path.join(full_dir, filename), frames, frame_rate, format, crf, metadata, soundtrack)
        entries = [_entry(filename, subfolder, "output")]
        if format != "webp":
            entries.append(_preview(frames, frame_rate, name))
        return {"ui": {"images": entries, "animated": [True]}}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(ETCSaveVideo)
