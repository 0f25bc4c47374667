"""A synthetic caption-video set of the three kinds ETC trains on (eq. 6), and a tracker that reads it back.

A square of one colour moves left, right, up or down over a plain background, through the middle of the
frame, at one speed in pixels per second. Each clip holds exactly the T frames the trainer takes and is
recorded at 4 or 8 fps, so the trainer samples it whole at its own rate (data.video_frame_indices) and the
motion per frame (3 or 1.5 pixels) is what the FPS embedding has to supply. Captions name colour and
direction ("a red square moving left"); one colour/direction pair can be held out. Caption-image pairs
are still squares ("a red square"), label folders hold squares of one colour at random places.
Clips are lossless (FFV1 in AVI): MPEG-4 at 32x32 rings by up to 100 levels around a square's edges.
"""
import json
import os

import numpy as np

COLORS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 70, 230), "yellow": (225, 205, 30)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (235, 235, 235)
SPEED = 12.0             # pixels per second
CLIP_RATES = (4.0, 8.0)  # frames per second of the recorded clips, both among the trainer's fps choices


def caption(color: str, direction: str) -> str:
    return f"a {color} square moving {direction}"


def moving_square(positions, side: int, color, height: int, width: int = None, background=BACKGROUND) -> np.ndarray:
    """[len(positions), height, width (default: height), 3] uint8: a ``side``-pixel square of ``color`` with its
    top-left corner at each (left, top) of ``positions``, over ``background`` (an RGB colour or an image).
    Every moving-square clip of the tests and benchmarks is drawn here."""
    video = np.empty((len(positions), height, width or height, 3), np.uint8)
    video[:] = background
    for frame, (left, top) in zip(video, positions):
        frame[top:top + side, left:left + side] = color
    return video


def square_frame(size: int, side: int, left: int, top: int, color) -> np.ndarray:
    return moving_square([(left, top)], side, color, size)[0]


def square_clip(color, direction: str, rate: float, frames: int, size: int, side: int) -> np.ndarray:
    """[frames, size, size, 3]: the square moves at SPEED px/s, recorded at ``rate``, on a path centred in
    the frame."""
    travel = size - side
    step = SPEED / rate
    first = (travel - step * (frames - 1)) / 2
    if first < 0:
        raise ValueError(f"{frames} frames at {rate:g} fps leave a {size}-pixel frame")
    dx, dy = DIRECTIONS[direction]
    positions = []
    for k in range(frames):
        along = int(round(first + k * step))
        position = along if dx + dy > 0 else travel - along
        positions.append((position, travel // 2) if dx else (travel // 2, position))
    return moving_square(positions, side, color, size)


def write_lossless_video(path: str, frames: np.ndarray, fps: float) -> str:
    import cv2
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), fps, frames.shape[2:0:-1])
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an FFV1 video to {path}")
    for frame in frames:
        writer.write(frame[:, :, ::-1].copy())
    writer.release()
    return path


def write_square_set(folder: str, frames: int, held_out=("green", "up"), size: int = 32, side: int = 10,
                     stills: int = 4, label_images: int = 12, seed: int = 0) -> dict:
    """Write the set under ``folder``; returns the trainer's data fields (video_manifest, image_manifest,
    label_folder) and the captions it trained on."""
    import cv2
    rng = np.random.default_rng(seed)
    travel = size - side
    videos, images = [], []
    for sub in ("videos", "images", "labels"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for color, rgb in COLORS.items():
        for direction in DIRECTIONS:
            if (color, direction) == tuple(held_out):
                continue
            for rate in CLIP_RATES:
                path = os.path.join(folder, "videos", f"{color}_{direction}_{rate:g}fps.avi")
                write_lossless_video(path, square_clip(rgb, direction, rate, frames, size, side), rate)
                videos.append({"video": path, "caption": caption(color, direction)})
        for i in range(stills):
            path = os.path.join(folder, "images", f"{color}_{i}.png")
            left, top = rng.integers(0, travel + 1, 2)
            cv2.imwrite(path, square_frame(size, side, left, top, rgb)[:, :, ::-1])
            images.append({"image": path, "caption": f"a {color} square"})
        label = os.path.join(folder, "labels", f"{color}_square")
        os.makedirs(label, exist_ok=True)
        for i in range(label_images):
            left, top = rng.integers(0, travel + 1, 2)
            cv2.imwrite(os.path.join(label, f"{i}.png"), square_frame(size, side, left, top, rgb)[:, :, ::-1])
    manifests = {}
    for name, entries in (("video_manifest", videos), ("image_manifest", images)):
        manifests[name] = os.path.join(folder, f"{name.split('_')[0]}s.jsonl")
        with open(manifests[name], "w") as f:
            f.writelines(json.dumps(e) + "\n" for e in entries)
    return {**manifests, "label_folder": os.path.join(folder, "labels"),
            "captions": sorted({e["caption"] for e in videos})}


def square_centres(frames: np.ndarray, threshold: int = 60, min_area: int = 12):
    """Per frame of ``frames`` [T, H, W, 3] uint8: (x, y) of the one square that stands out from the
    background (the frame's median colour), or None where there is no such region or more than one."""
    import cv2
    centres = []
    for frame in frames:
        background = np.median(frame.reshape(-1, 3), axis=0)
        mask = (np.abs(frame.astype(np.float32) - background).max(axis=-1) > threshold).astype(np.uint8)
        count, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        regions = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
        centres.append(tuple(centroids[regions[0]]) if len(regions) == 1 else None)
    return centres


def motion_direction(centres, min_travel: float = 4.0):
    """'left', 'right', 'up' or 'down': the axis and sign of the least-squares motion of the centres over
    the frames, when every frame has one square and it travels at least ``min_travel`` pixels along
    that axis, more than along the other; else None."""
    if not centres or any(c is None for c in centres):
        return None
    points = np.asarray(centres, dtype=np.float64)
    t = np.arange(len(points)) - (len(points) - 1) / 2
    travel = (t @ (points - points.mean(0))) / (t @ t) * (len(points) - 1)  # slope times duration, per axis
    axis = int(np.argmax(np.abs(travel)))
    if abs(travel[axis]) < min_travel or abs(travel[axis]) < 2 * abs(travel[1 - axis]):
        return None
    return (("left", "right"), ("up", "down"))[axis][int(travel[axis] > 0)]
