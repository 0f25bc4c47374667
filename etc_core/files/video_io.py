"""Video files with the ComfyUI workflow embedded (PyAV + Pillow, no ComfyUI import); the tests read them back
with ``etc_vcut_dev.video_read``.

Formats (``FORMATS``):

- ``h264-mp4``: H.264 yuv420p through libx264. ``prompt``/``workflow`` are ``moov/udta/meta`` keys + ilst
  items (``movflags=use_metadata_tags``), where ComfyUI's frontend looks when an MP4 is dropped; ``faststart``
  puts the ``moov`` box first, so a browser plays while downloading and the frontend (which reads the first
  64 MiB) finds it in a long file too. AAC audio.
- ``vp9-webm``: VP9 yuv420p through libvpx; the keys are Matroska SimpleTags (``PROMPT``/``WORKFLOW``) in
  the header, which the frontend reads from the first 2 MiB. Opus audio.
- ``webp``: animated WEBP through Pillow, metadata as EXIF ``"key:json"`` strings (0x0110 prompt, 0x010f
  and down for the workflow), as ComfyUI's own SaveAnimatedWEBP writes it. No audio.

``write_gif`` writes the small animated GIF the node shows as a preview in frontends that only show images.
"""
import json
import logging
import math
import numbers
import os
from fractions import Fraction

import numpy as np

from .messages import quote
from .atomic import write_atomic

FORMATS = ("h264-mp4", "vp9-webm", "webp")
EXTENSIONS = {"h264-mp4": "mp4", "vp9-webm": "webm", "webp": "webp"}
MAX_CRF = {"h264-mp4": 51, "vp9-webm": 63, "webp": 100}
_CONTAINERS = {"h264-mp4": ("mp4", "libx264", "aac"), "vp9-webm": ("webm", "libvpx-vp9", "libopus")}
# The sample rates libavcodec's AAC encoder accepts (MPEG-4 sampling frequency index).
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
AUDIO_RATE_RANGE = (1000, 384000)
_EXIF_PROMPT, _EXIF_FIRST_EXTRA = 0x0110, 0x010F
log = logging.getLogger(__name__)


class ImageFrames:
    """A ComfyUI IMAGE batch (float [T, H, W, 3] in [0, 1], any device) read as RGB uint8 frames one at a time.

    The writers take one frame at a time from it, so the batch is never converted whole: a whole-batch
    clamp, scale and round held about 2.7x the batch's size at once.
    """

    def __init__(self, images):
        if images.ndim != 4 or images.shape[-1] != 3 or not images.shape[0]:
            raise ValueError(f"images must be [T>0, H, W, 3], got {list(images.shape)}")
        self.images = images
        self.shape = tuple(images.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        import torch
        frame = self.images[index].float().clamp(0, 1).mul_(255).round_()
        return frame.to(torch.uint8).cpu().numpy()


def _check_frames(frames):
    """``frames``: uint8 [T, H, W, 3] array or :class:`ImageFrames`; indexing gives one uint8 frame."""
    if isinstance(frames, ImageFrames):
        return frames
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not frames.shape[0]:
        raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return frames


def even_padding(height: int, width: int):
    """``(pad_h, pad_w, note)``: odd heights/widths get one edge-replicated row/column for yuv420p, whose
    chroma planes are half size; ``note`` says so, or is ``None``."""
    pad_h, pad_w = height % 2, width % 2
    if not (pad_h or pad_w):
        return 0, 0, None
    return pad_h, pad_w, f"{width}x{height} padded to {width + pad_w}x{height + pad_h} (yuv420p needs even sizes)"


def _padded(frame: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else frame


def _json_values(metadata: dict) -> dict:
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in (metadata or {}).items()
            if value is not None}


def _audio_waveform(audio, seconds: float):
    """``audio = (waveform [C, S] float in [-1, 1], sample_rate)`` cut to the video's length, checked."""
    waveform, sample_rate = audio
    waveform = np.asarray(waveform, np.float32)
    if waveform.ndim != 2 or waveform.shape[0] not in (1, 2) or not waveform.shape[1]:
        raise ValueError(f"audio must be mono or stereo with samples, got a waveform of shape {list(waveform.shape)}")
    if not (isinstance(sample_rate, numbers.Real) and AUDIO_RATE_RANGE[0] <= sample_rate <= AUDIO_RATE_RANGE[1]):
        low, high = AUDIO_RATE_RANGE
        raise ValueError(f"audio sample rate {quote(sample_rate)} is outside {low}-{high} Hz; resample the audio "
                         "(e.g. to 48000 Hz) before saving")
    return np.ascontiguousarray(waveform[:, :math.ceil(sample_rate * seconds)]), int(sample_rate)


def audio_stream_rate(codec: str, sample_rate: int) -> int:
    """The rate the audio stream is encoded at: Opus always 48 kHz; AAC at the input's rate when AAC has it,
    else the nearest AAC rate above it (libavcodec's AAC encoder refuses other rates with error 22)."""
    if codec == "libopus":
        return 48000
    if sample_rate in AAC_RATES:
        return sample_rate
    return min((rate for rate in AAC_RATES if rate >= sample_rate), default=max(AAC_RATES))


def _write_av(path: str, frames: np.ndarray, fps: float, fmt: str, crf: int, metadata: dict, audio):
    import av
    container_format, video_codec, audio_codec = _CONTAINERS[fmt]
    options = {"movflags": "use_metadata_tags+faststart"} if container_format == "mp4" else {}
    with av.open(path, mode="w", format=container_format, options=options) as container:
        container.metadata.update(_json_values(metadata))
        stream = container.add_stream(video_codec, rate=Fraction(round(fps * 1000), 1000))
        pad_h, pad_w, _ = even_padding(*frames.shape[1:3])
        stream.height, stream.width = frames.shape[1] + pad_h, frames.shape[2] + pad_w
        stream.pix_fmt = "yuv420p"
        codec_options = {"crf": str(crf)}
        if fmt == "vp9-webm":
            stream.bit_rate = 0  # constant quality: crf alone sets the quality
            # libvpx's default speed is about 3x slower than cpu-used 4 with row threads, at a similar size.
            codec_options.update({"row-mt": "1", "cpu-used": "4"})
        stream.options = codec_options
        if audio is not None:  # every stream exists before the first packet is muxed
            waveform, sample_rate = audio
            layout = "mono" if waveform.shape[0] == 1 else "stereo"
            # PyAV's encoder resamples the frame to the stream's rate and format.
            audio_stream = container.add_stream(audio_codec, rate=audio_stream_rate(audio_codec, sample_rate),
                                                layout=layout)
        for index in range(len(frames)):  # one frame converted and padded at a time
            frame = _padded(frames[index], pad_h, pad_w)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
        if audio is not None:
            frame = av.AudioFrame.from_ndarray(waveform, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = sample_rate, 0
            container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))


def _webp_exif(metadata: dict):
    from PIL import Image
    exif = Image.Exif()
    values = dict(_json_values(metadata))
    if "prompt" in values:
        exif[_EXIF_PROMPT] = "prompt:" + values.pop("prompt")
    for tag, (key, value) in zip(range(_EXIF_FIRST_EXTRA, 0, -1), values.items()):
        exif[tag] = f"{key}:{value}"
    return exif


def _write_pillow(path: str, frames, fps: float, pil_format: str, step: int = 1, **options):
    """Pillow's animated writers; frames are converted one at a time (the GIF writer takes them as they come;
    the WEBP writer lists them, as 8-bit images: a quarter of a float batch's size)."""
    from PIL import Image
    images = (Image.fromarray(np.ascontiguousarray(frames[i][::step, ::step])) for i in range(len(frames)))
    first = next(images)
    first.save(path, format=pil_format, save_all=True, append_images=images, duration=1000.0 / fps, loop=0,
               **options)


def write_video(path: str, frames, fps: float, fmt: str = "h264-mp4", crf: int = 19,
                metadata: dict = None, audio=None) -> str:
    """Write RGB uint8 frames [T, H, W, 3] (or :class:`ImageFrames`) at ``fps`` to ``path`` atomically;
    returns ``path``.

    ``crf``: lower is better and bigger (H.264 0-51, VP9 0-63; WEBP quality = 100 - crf).
    ``metadata``: ``{"prompt": ..., "workflow": ...}``, values JSON-encoded unless strings.
    ``audio``: ``(waveform [C, S], sample_rate)`` or ``None`` (MP4 and WebM only).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {quote(fmt)} is not one of {list(FORMATS)}")
    frames = _check_frames(frames)
    if not fps > 0:
        raise ValueError(f"frame_rate must be positive, got {fps}")
    if not 0 <= crf <= MAX_CRF[fmt]:
        raise ValueError(f"crf {crf} is outside 0-{MAX_CRF[fmt]}, the range of {fmt}")
    if fmt == "webp":
        if audio is not None:
            raise ValueError("audio: WEBP has no audio track; pick h264-mp4 or vp9-webm, or disconnect the audio")
        return write_atomic(path, lambda partial: _write_pillow(partial, frames, fps, "WEBP", quality=100 - crf,
                                                           exif=_webp_exif(metadata)))
    note = even_padding(*frames.shape[1:3])[2]
    if note:
        log.warning("%s: %s", os.path.basename(path), note)
    audio = None if audio is None else _audio_waveform(audio, len(frames) / fps)
    return write_atomic(path, lambda partial: _write_av(partial, frames, fps, fmt, crf, metadata, audio))


def write_gif(path: str, frames, fps: float, max_side: int = 512) -> str:
    """A looping GIF of the frames, every ``k``-th pixel so the longer side is at most ``max_side``."""
    frames = _check_frames(frames)
    step = math.ceil(max(frames.shape[1:3]) / max_side)
    return write_atomic(path, lambda partial: _write_pillow(partial, frames, fps, "GIF", step))
