"""ETC's training data: caption-video, caption-image and label-image sources (eq. 6), JSONL manifests and
caption folders, and the CLIP-score video filter (eq. 5; ``python -m etc_core.data.filter``)."""
from .manifest import ManifestError, read_manifest
from .sources import DataError, TripleData, frames_to_tensor, video_frame_indices

__all__ = ["ManifestError", "read_manifest", "DataError", "TripleData", "frames_to_tensor", "video_frame_indices"]
