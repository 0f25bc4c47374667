"""Image and video frame sizes read from the file's header, before anything is decoded.

A 3 MB PNG can declare 32000x32000 pixels: decoding it takes gigabytes. Anyone who reaches a ComfyUI server
can put such a file in input/ (``/upload/image``), so the training data and the CLIP filter read each
image's size with PIL (which parses the header and decodes nothing until asked) and each video's frame size
from the container's stream (OpenCV reads it when the file opens), and leave out what is above
``max_frame_pixels``.
"""
MAX_FRAME_PIXELS = 8192 * 8192  # 8K video frames (7680x4320) and any photo a camera makes fit below this


def too_large(width: int, height: int, max_pixels: int):
    """Why a ``width x height`` frame is refused, or None."""
    if width * height > max_pixels:
        return f"{width}x{height} pixels, above max_frame_pixels={max_pixels}"
    return None


def image_too_large(path: str, max_pixels: int):
    """Why the image at ``path`` is refused by its header's size (or for a header PIL cannot read: every
    extension the data lists take is one PIL reads), or None."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            return too_large(*image.size, max_pixels)
    except Image.DecompressionBombError:  # PIL's own limit, far above ours: no size to name
        return f"more than {Image.MAX_IMAGE_PIXELS * 2} pixels, above max_frame_pixels={max_pixels}"
    except Exception:  # a damaged header surfaces in several exception types
        return "cannot read the image header"
