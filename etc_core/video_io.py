"""MP4 writing with the workflow embedded, and reading it back.

OpenCV writes the video (MPEG-4 Part 2, 'mp4v', which every OpenCV wheel can
encode). The prompt and workflow JSON go into a top-level ISO-BMFF ``uuid`` box
appended after the movie; players skip boxes they do not know.
"""
import json
import os
import struct
import uuid

import numpy as np

METADATA_UUID = uuid.UUID("6574632d-7663-7574-2d77-6f726b666c6f").bytes  # "etc-vcut-workflo"


def write_mp4(path: str, frames: np.ndarray, fps: float, metadata: dict = None) -> str:
    """Write RGB uint8 frames [T, H, W, 3] to ``path`` atomically; returns ``path``."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    height, width = frames.shape[1:3]
    partial = path + ".partial.mp4"
    writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an mp4v video to {partial}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if metadata:
        payload = json.dumps(metadata).encode()
        with open(partial, "ab") as f:
            f.write(struct.pack(">I4s", 8 + 16 + len(payload), b"uuid") + METADATA_UUID + payload)
    os.replace(partial, path)
    return path


def read_mp4_metadata(path: str) -> dict:
    """The JSON written by :func:`write_mp4`, or ``{}``."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size < 8:
            break
        if kind == b"uuid" and data[offset + 8:offset + 24] == METADATA_UUID:
            return json.loads(data[offset + 24:offset + size])
        offset += size
    return {}


def read_mp4_frames(path: str) -> np.ndarray:
    """Decode every frame as RGB uint8 [T, H, W, 3]."""
    import cv2

    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
