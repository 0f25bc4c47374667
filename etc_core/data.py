"""ETC triple data (section 4.2, eq. 6): caption-video, caption-image and label-image samples as T frames.

    caption-video: T frames sampled at an fps drawn from [1, 2, 4, 8, 15, 30, 60] (never above the clip's rate)
    caption-image: one image repeated T times, fps 120
    label-image:   T different images of one label, fps 0

Every sample is a pure function of (seed, index), so a resumed run sees exactly the data it would have.
"""
import os

import numpy as np
import torch

from .manifest import read_manifest

VIDEO_FPS = (1, 2, 4, 8, 15, 30, 60)
IMAGE_FPS, LABEL_FPS = 120, 0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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


def _to_tensor(frames) -> torch.Tensor:
    array = np.stack(frames).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2)  # [T, 3, H, W] in [-1, 1]


def _read_image(path):
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class TripleData:
    """Samples of the three kinds, mixed by ``ratios`` (video, image, label)."""

    def __init__(self, frames: int, resolution: int, video_manifest=None, image_manifest=None, label_folder=None,
                 ratios=(1.0, 1.0, 1.0), seed: int = 0):
        self.frames, self.resolution, self.seed = frames, resolution, seed
        self.videos = read_manifest(video_manifest, ("video", "caption")) if video_manifest else []
        self.images = read_manifest(image_manifest, ("image", "caption")) if image_manifest else []
        self.labels = {}
        if label_folder:
            for label in sorted(os.listdir(label_folder)):
                folder = os.path.join(label_folder, label)
                files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
                if len(files) >= frames:
                    self.labels[label] = files
        sources = [bool(self.videos), bool(self.images), bool(self.labels)]
        weights = np.array([r if s else 0.0 for r, s in zip(ratios, sources)], dtype=np.float64)
        if weights.sum() <= 0:
            raise ValueError("no training data: give video_manifest, image_manifest or label_folder (a label folder "
                             f"needs at least frames={frames} images)")
        self.weights = weights / weights.sum()

    def sample(self, index: int) -> dict:
        """{"pixels": [T, 3, H, W] in [-1, 1], "caption": str, "fps": float, "kind": str}."""
        rng = np.random.default_rng([self.seed, index])
        kind = ("video", "image", "label")[int(rng.choice(3, p=self.weights))]
        if kind == "video":
            return self._video(self.videos[int(rng.integers(len(self.videos)))], rng)
        if kind == "image":
            entry = self.images[int(rng.integers(len(self.images)))]
            frame = resize_crop(_read_image(entry["image"]), self.resolution)
            return {"pixels": _to_tensor([frame] * self.frames), "caption": entry["caption"], "fps": float(IMAGE_FPS),
                    "kind": kind, "keys": [f"{entry['image']}@{self.resolution}"] * self.frames}
        label = sorted(self.labels)[int(rng.integers(len(self.labels)))]
        files = rng.choice(self.labels[label], size=self.frames, replace=False)
        frames = [resize_crop(_read_image(f), self.resolution) for f in files]
        return {"pixels": _to_tensor(frames), "caption": label.replace("_", " "), "fps": float(LABEL_FPS), "kind": kind,
                "keys": [f"{f}@{self.resolution}" for f in files]}

    def _video(self, entry, rng):
        import cv2
        capture = cv2.VideoCapture(entry["video"])
        try:
            total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            clip_fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
            if total <= 0:
                raise ValueError(f"cannot read video {entry['video']}")
            indices, fps = video_frame_indices(clip_fps, total, self.frames, rng)
            frames = []
            for i in indices:
                capture.set(cv2.CAP_PROP_POS_FRAMES, i)
                ok, frame = capture.read()
                if not ok:
                    raise ValueError(f"cannot decode frame {i} of {entry['video']}")
                frames.append(resize_crop(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.resolution))
        finally:
            capture.release()
        return {"pixels": _to_tensor(frames), "caption": entry["caption"], "fps": fps, "kind": "video",
                "keys": [f"{entry['video']}#{i}@{self.resolution}" for i in indices]}

    def batch(self, indices) -> dict:
        samples = [self.sample(i) for i in indices]
        return {"pixels": torch.stack([s["pixels"] for s in samples]), "captions": [s["caption"] for s in samples],
                "fps": torch.tensor([s["fps"] for s in samples]), "kinds": [s["kind"] for s in samples],
                "keys": [key for s in samples for key in s["keys"]]}
