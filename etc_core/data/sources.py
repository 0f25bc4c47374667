"""ETC triple data (section 4.2, eq. 6): caption-video, caption-image and label-image samples as T frames.

    caption-video: T frames sampled at an fps drawn from [1, 2, 4, 8, 15, 30, 60] (never above the clip's rate)
    caption-image: one image repeated T times, fps 120
    label-image:   T different images of one label, fps 0

Every sample is a pure function of (seed, index), so a resumed run sees exactly the data it would have.
Every listed video and image is probed once, at the start: an unreadable one is left out (and named in
the log) or refuses the run, so no run dies on a bad file halfway and no resume meets one.
"""
import functools
import os

import numpy as np
import torch

from ..files.media_header import MAX_FRAME_PIXELS, image_too_large
from .manifest import IMAGE_EXTENSIONS, check_inside, read_manifest
from .video_frames import VideoReadError, opened_video, read_frames

VIDEO_FPS = (1, 2, 4, 8, 15, 30, 60)
IMAGE_FPS, LABEL_FPS = 120, 0
SHOWN_SKIPS = 20


class DataError(ValueError):
    pass


def video_frame_indices(clip_fps: float, total: int, frames: int, rng: np.random.Generator):
    """(indices, fps): ``frames`` indices spaced for an fps drawn from VIDEO_FPS, at most the clip's rate."""
    choices = [f for f in VIDEO_FPS if f <= clip_fps and (frames - 1) * clip_fps / f < total] or [None]
    fps = choices[int(rng.integers(len(choices)))]
    if fps is None:  # too short for any rate: take consecutive frames at the clip's own rate
        fps = clip_fps
    stride = clip_fps / fps
    span = (frames - 1) * stride
    start = float(rng.uniform(0, max(0.0, total - 1 - span)))
    return [min(total - 1, int(round(start + i * stride))) for i in range(frames)], float(fps)


def resize_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to ``size`` and centre-crop to size x size (RGB uint8)."""
    import cv2
    h, w = image.shape[:2]
    scale = size / min(h, w)
    image = cv2.resize(image, (max(size, round(w * scale)), max(size, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def frames_to_tensor(frames) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] (an array or a list of frames) -> float [T, 3, H, W] in [-1, 1]."""
    array = np.stack(frames).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2)  # [T, 3, H, W] in [-1, 1]


def _read_image(path, max_pixels: int = MAX_FRAME_PIXELS):
    import cv2
    reason = image_too_large(path, max_pixels)  # the file may have changed since the probe
    if reason:
        raise DataError(f"cannot read image {path}: {reason}")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def probe_image(path: str, max_pixels: int = MAX_FRAME_PIXELS):
    """None when ``path`` decodes as an image of at most ``max_pixels``, else why not (the size is read
    from the header, before decoding)."""
    import cv2
    if not os.path.isfile(path):
        return "missing"
    reason = image_too_large(path, max_pixels)
    if reason:
        return reason
    return None if cv2.imread(path, cv2.IMREAD_COLOR) is not None else "cannot decode"


def probe_video(path: str, max_pixels: int = MAX_FRAME_PIXELS):
    """None when ``path`` opens as a video of frames of at most ``max_pixels`` whose first and last frames
    decode, else why not."""
    if not os.path.isfile(path):
        return "missing"
    try:
        with opened_video(path, max_pixels) as (capture, total, _):
            read_frames(capture, sorted({0, total - 1}), path)
    except VideoReadError as e:
        return e.reason
    return None


def label_images(label_folder: str, roots=None) -> dict:
    """{label: [image paths]} of the subfolders of ``label_folder`` (files beside them are ignored); with
    ``roots``, every image must lie inside one of them."""
    if not os.path.isdir(label_folder):
        raise DataError(f"label_folder {label_folder} is not a folder; give a folder of <label>/ image folders")
    labels = {}
    for label in sorted(os.listdir(label_folder)):
        folder = os.path.join(label_folder, label)
        if os.path.isdir(folder):
            labels[label] = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                                   if f.lower().endswith(IMAGE_EXTENSIONS))
            for path in labels[label]:
                check_inside(path, roots, f"label_folder {label}/")
    return labels


def read_sources(video_manifest=None, image_manifest=None, label_folder=None, roots=None):
    """``(videos, images, labels, skipped)`` as listed, before any file is probed."""
    videos, images, labels, skipped = [], [], {}, []
    if video_manifest:
        videos, missing = read_manifest(video_manifest, "video", roots)
        skipped += missing
    if image_manifest:
        images, missing = read_manifest(image_manifest, "image", roots)
        skipped += missing
    if label_folder:
        labels = label_images(label_folder, roots)
    return videos, images, labels, skipped


def skipped_report(skipped) -> str:
    shown = ", ".join(f"{path} ({reason})" for path, reason in skipped[:SHOWN_SKIPS])
    more = f" and {len(skipped) - SHOWN_SKIPS} more" if len(skipped) > SHOWN_SKIPS else ""
    return f"{len(skipped)} unreadable or uncaptioned files left out: {shown}{more}"


def missing(path: str):
    """The cheap probe a launch runs before anything is written: does the file exist."""
    return None if os.path.isfile(path) else "missing"


def usable_sources(frames: int, sources, ratios, skip_unreadable: bool = True, probe_video=probe_video,
                   probe_image=probe_image, log=None):
    """``(videos, images, labels, weights, skipped)``: the listed files that pass their probe, each source's
    share, and ``[(path, reason)]`` of those left out.

    Files that fail are left out and named in ``log``, or refuse the run when ``skip_unreadable`` is off;
    when none are left, the refusal names them too.
    """
    videos, images, labels, skipped = sources
    skipped = list(skipped)

    def readable(path, probe):
        reason = probe(path)
        if reason:
            skipped.append((path, reason))
        return not reason

    videos = [row for row in videos if readable(row["video"], probe_video)]
    images = [row for row in images if readable(row["image"], probe_image)]
    kept_labels = {}
    for label, files in labels.items():
        files = [f for f in files if readable(f, probe_image)]
        if len(files) >= frames:
            kept_labels[label] = files
    if skipped:
        if not skip_unreadable:
            raise DataError(f"{skipped_report(skipped)}; fix or remove them, or set skip_unreadable")
        if log:
            log(f"data: {skipped_report(skipped)}")
    present = [bool(videos), bool(images), bool(kept_labels)]
    weights = np.array([r if p else 0.0 for r, p in zip(ratios, present)], dtype=np.float64)
    if weights.sum() <= 0:
        left_out = f" ({skipped_report(skipped)})" if skipped else ""
        raise DataError(f"no readable training data with a ratio above 0{left_out}: give video_manifest, "
                        f"image_manifest or label_folder (a label folder needs at least frames={frames} images "
                        "per label)")
    return videos, images, kept_labels, weights / weights.sum(), skipped


class TripleData:
    """Samples of the three kinds, mixed by ``ratios`` (video, image, label)."""

    def __init__(self, frames: int, resolution: int, video_manifest=None, image_manifest=None, label_folder=None,
                 ratios=(1.0, 1.0, 1.0), seed: int = 0, skip_unreadable: bool = True, log=None, roots=None,
                 max_frame_pixels: int = MAX_FRAME_PIXELS):
        self.frames, self.resolution, self.seed = frames, resolution, seed
        self.max_pixels = max_frame_pixels
        sources = read_sources(video_manifest, image_manifest, label_folder, roots)
        self.videos, self.images, self.labels, self.weights, self.skipped = usable_sources(
            frames, sources, ratios, skip_unreadable, functools.partial(probe_video, max_pixels=max_frame_pixels),
            functools.partial(probe_image, max_pixels=max_frame_pixels), log=log)

    def sample(self, index: int) -> dict:
        """{"pixels": [T, 3, H, W] in [-1, 1], "caption": str, "fps": float, "kind": str}."""
        rng = np.random.default_rng([self.seed, index])
        kind = ("video", "image", "label")[int(rng.choice(3, p=self.weights))]
        if kind == "video":
            return self._video(self.videos[int(rng.integers(len(self.videos)))], rng)
        if kind == "image":
            entry = self.images[int(rng.integers(len(self.images)))]
            frame = resize_crop(_read_image(entry["image"], self.max_pixels), self.resolution)
            return {"pixels": frames_to_tensor([frame] * self.frames), "caption": entry["caption"],
                    "fps": float(IMAGE_FPS), "kind": kind,
                    "keys": [f"{entry['image']}@{self.resolution}"] * self.frames}
        label = sorted(self.labels)[int(rng.integers(len(self.labels)))]
        files = rng.choice(self.labels[label], size=self.frames, replace=False)
        frames = [resize_crop(_read_image(f, self.max_pixels), self.resolution) for f in files]
        return {"pixels": frames_to_tensor(frames), "caption": label.replace("_", " "), "fps": float(LABEL_FPS),
                "kind": kind, "keys": [f"{f}@{self.resolution}" for f in files]}

    def _video(self, entry, rng):
        with opened_video(entry["video"], self.max_pixels) as (capture, total, clip_fps):
            indices, fps = video_frame_indices(clip_fps, total, self.frames, rng)
            frames = [resize_crop(f, self.resolution) for f in read_frames(capture, indices, entry["video"])]
        return {"pixels": frames_to_tensor(frames), "caption": entry["caption"], "fps": fps, "kind": "video",
                "keys": [f"{entry['video']}#{i}@{self.resolution}" for i in indices]}

    def batch(self, indices) -> dict:
        samples = [self.sample(i) for i in indices]
        return {"pixels": torch.stack([s["pixels"] for s in samples]), "captions": [s["caption"] for s in samples],
                "fps": torch.tensor([s["fps"] for s in samples]),
                "keys": [key for s in samples for key in s["keys"]]}
