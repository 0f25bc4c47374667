"""Frames of a video file by index, through OpenCV: the one reader the training data and the CLIP filter share."""
import contextlib

from ..files.media_header import MAX_FRAME_PIXELS, too_large


class VideoReadError(ValueError):
    """``reason`` is what went wrong without the path (the data report names the path beside it)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


@contextlib.contextmanager
def opened_video(path: str, max_pixels: int = MAX_FRAME_PIXELS):
    """``(capture, frame count, fps)`` of ``path``; refuses a file that does not open as a video, or whose
    stream declares frames of more than ``max_pixels`` (read from the container, before any decoding)."""
    import cv2
    capture = cv2.VideoCapture(path)
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if not capture.isOpened() or total <= 0:
            raise VideoReadError(path, "cannot open as a video")
        size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        reason = too_large(*size, max_pixels)
        if reason:
            raise VideoReadError(path, f"frames of {reason}")
        yield capture, total, capture.get(cv2.CAP_PROP_FPS) or 30.0
    finally:
        capture.release()


def read_frames(capture, indices, path: str) -> list:
    """RGB uint8 frames at ``indices`` (seeking to each); ``path`` names the file in errors."""
    import cv2
    frames = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok:
            raise VideoReadError(path, f"cannot decode frame {index}")
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return frames
