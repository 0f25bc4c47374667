"""Reading back the videos ``etc_core.files.video_io`` writes: frames and the embedded workflow (tests and
benchmarks; the pack itself never reads them)."""
import json

import numpy as np


def _is_pillow_animation(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] == b"GIF8" or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def read_video_frames(path: str) -> np.ndarray:
    """Decode every frame of a file written by ``video_io.write_video`` (or any PyAV-readable video) as RGB uint8
    [T, H, W, 3]."""
    if _is_pillow_animation(path):
        from PIL import Image, ImageSequence
        with Image.open(path) as image:
            return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])
    import av
    with av.open(path) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def _decoded(values: dict) -> dict:
    """The values that are JSON objects or arrays (a container's own tags are plain strings or numbers)."""
    out = {}
    for key, value in values.items():
        try:
            value = json.loads(value)
        except (TypeError, ValueError):
            continue
        if isinstance(value, (dict, list)):
            out[key.lower()] = value
    return out


def read_video_metadata(path: str) -> dict:
    """The JSON values written by ``video_io.write_video`` (``prompt``, ``workflow``, ...), or ``{}``."""
    if _is_pillow_animation(path):
        from PIL import Image
        with Image.open(path) as image:
            items = [str(v).partition(":") for v in image.getexif().values()]
        return _decoded({key: value for key, _, value in items})
    import av
    with av.open(path) as container:
        return _decoded(dict(container.metadata))
