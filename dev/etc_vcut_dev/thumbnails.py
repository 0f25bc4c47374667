"""Template-browser thumbnails (512x512 JPEG): the title, then what the graph makes.

Only the ETC text-to-video graph has a real output here (the first command's sample, docs/etc_demo_strip.png).
No SVD, SV3D or Stable Zero123 weights can be downloaded on this machine and tiny random weights make noise, so
those cards show an input image drawn here and the frames the graph makes as labelled empty boxes, saying that
no sample is shown; the long-video and training cards show the grid or the files a run makes, labelled alike.
"""
import math
import os

from PIL import Image, ImageDraw, ImageFont

SIZE = 512
INK, MUTED, PAPER, BOX = (25, 25, 30), (95, 95, 105), (246, 246, 242), (205, 205, 200)


def _font(size: int):
    return ImageFont.load_default(size=size)


def _wrapped(draw, xy, text: str, size: int, fill, width: int = SIZE - 40) -> int:
    """Draw ``text`` wrapped to ``width`` pixels from ``xy``; returns the y below it."""
    font, (x, y), line = _font(size), xy, ""
    for word in text.split():
        if line and draw.textlength(f"{line} {word}", font=font) > width:
            draw.text((x, y), line, font=font, fill=fill)
            y, line = y + int(size * 1.25), word
        else:
            line = f"{line} {word}".strip()
    draw.text((x, y), line, font=font, fill=fill)
    return y + int(size * 1.25)


def _card(title: str, subtitle: str):
    image = Image.new("RGB", (SIZE, SIZE), PAPER)
    draw = ImageDraw.Draw(image)
    y = _wrapped(draw, (20, 16), title, 36, INK)
    return image, draw, _wrapped(draw, (20, y + 2), subtitle, 19, MUTED) + 8


def _caption(draw, text: str):
    _wrapped(draw, (20, SIZE - 72), text, 17, MUTED)


def example_input(size: int = 150) -> Image.Image:
    """A stand-in for the user's image: a shaded ball with its shadow on a plain background."""
    image = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    c, r = size / 2, size * 0.32
    draw.ellipse([c - r, c + r * 0.9, c + r, c + r * 1.15], fill=(205, 205, 205))
    for i in range(20):  # dark rim to a light spot up and to the left
        t = i / 19
        k, x, y = r * (1 - 0.85 * t), c - 0.35 * r * t, c - 0.35 * r * t
        draw.ellipse([x - k, y - k, x + k, y + k], fill=(int(120 + 130 * t), int(20 + 120 * t), int(20 + 110 * t)))
    return image


def _empty_frame(draw, box, label: str):
    draw.rectangle(box, outline=MUTED, fill=BOX, width=1)
    x0, y0, x1, y1 = box
    font = _font(max(9, min(14, int((x1 - x0) / 3))))
    w = draw.textlength(label, font=font)
    draw.text(((x0 + x1 - w) / 2, (y0 + y1) / 2 - 7), label, font=font, fill=MUTED)


def image_to_frames(title: str, subtitle: str, frames: int, columns: int, aspect: float, caption: str,
                    labels=None) -> Image.Image:
    """Input image -> ``frames`` empty frames (``aspect`` = width / height) in ``columns`` columns."""
    image, draw, top = _card(title, subtitle)
    source = example_input()
    image.paste(source, (20, top + 20))
    draw.text((20, top + 176), "your image", font=_font(16), fill=MUTED)
    draw.polygon([(184, top + 88), (200, top + 95), (184, top + 102)], fill=INK)
    left, right, bottom = 210, SIZE - 20, SIZE - 84
    rows, cell_w = math.ceil(frames / columns), (right - left) / columns
    h = min((cell_w - 4) / aspect, (bottom - top) / rows - 4)
    w = h * aspect
    for i in range(frames):
        x, y = left + (i % columns) * (w + 4), top + (i // columns) * (h + 4)
        _empty_frame(draw, (x, y, x + w, y + h), labels[i] if labels else str(i + 1))
    _caption(draw, caption)
    return image


def orbit(title: str, subtitle: str, views: int, caption: str) -> Image.Image:
    """Input image in the middle, ``views`` empty views on a ring around it."""
    image, draw, top = _card(title, subtitle)
    cx, cy = SIZE / 2, (top + SIZE - 84) / 2
    radius, half = min(SIZE / 2 - 50, (SIZE - 84 - top) / 2 - 22), 17
    for i in range(views):
        a = 2 * math.pi * i / views - math.pi / 2
        x, y = cx + radius * math.cos(a), cy + radius * math.sin(a)
        _empty_frame(draw, (x - half, y - half, x + half, y + half), str(i + 1))
    source = example_input(110)
    image.paste(source, (int(cx - 55), int(cy - 55)))
    _caption(draw, caption)
    return image


def etc_sample(strip_path: str, title: str, subtitle: str, caption: str, columns: int = 4,
               frame: int = 128, gap: int = 2) -> Image.Image:
    """The frames of a demo frame strip (``frame`` pixels each, ``gap`` apart) in an ETC-style grid."""
    image, draw, top = _card(title, subtitle)
    with Image.open(strip_path) as strip:
        frames = [strip.crop((i * (frame + gap), 0, i * (frame + gap) + frame, frame)).convert("RGB")
                  for i in range((strip.width + gap) // (frame + gap))]
    cell = min((SIZE - 40) // columns, (SIZE - 84 - top) // math.ceil(len(frames) / columns)) - 4
    for i, f in enumerate(frames):
        x, y = 20 + (i % columns) * (cell + 4), top + (i // columns) * (cell + 4)
        image.paste(f.resize((cell, cell), Image.NEAREST), (x, y))
        draw.text((x + 4, y + 2), str(i + 1), font=_font(14), fill=(250, 250, 250))
    _caption(draw, caption)
    return image


def grid(title: str, subtitle: str, side: int, caption: str) -> Image.Image:
    """An empty ``side`` x ``side`` frame grid, frames numbered along the rows."""
    image, draw, top = _card(title, subtitle)
    extent = min(SIZE - 40, SIZE - 84 - top - 6)
    x0, cell = (SIZE - extent) / 2, extent / side
    for i in range(side * side):
        x, y = x0 + (i % side) * cell, top + (i // side) * cell
        shade = 225 - int(40 * i / (side * side))
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(shade, shade, shade + 8), outline=PAPER)
    for i in (0, side - 1, side * side - 1):
        x, y = x0 + (i % side) * cell, top + (i // side) * cell
        draw.text((x + 2, y + 2), str(i + 1), font=_font(11), fill=INK)
    _caption(draw, caption)
    return image


def training(title: str, subtitle: str, caption: str) -> Image.Image:
    """What a run reads and writes, as three labelled boxes."""
    image, draw, top = _card(title, subtitle)
    steps = [("your clips + captions", "input/etc_data/clips/\nclip1.mp4 + clip1.txt"),
             ("ETCTrainer, 300 steps", "SD 2.1 base from\nmodels/checkpoints/"),
             ("your ETC model", "output/etc_runs/first_run/final/\netc_unet_comfyui.safetensors\n"
                                "etc_fps.safetensors")]
    height = (SIZE - 84 - top - 2 * 22) / 3
    for i, (head, body) in enumerate(steps):
        y = top + i * (height + 22)
        draw.rounded_rectangle([40, y, SIZE - 40, y + height], radius=10, fill=BOX, outline=MUTED)
        draw.text((56, y + 8), head, font=_font(22), fill=INK)
        draw.multiline_text((56, y + 38), body, font=_font(16), fill=MUTED, spacing=3)
        if i < 2:
            draw.polygon([(SIZE / 2 - 9, y + height + 4), (SIZE / 2 + 9, y + height + 4),
                          (SIZE / 2, y + height + 18)], fill=INK)
    _caption(draw, caption)
    return image


NO_SAMPLE = "No sample shown: no {} weights here (empty boxes are the frames the graph makes)."


def thumbnail(name: str, title: str, docs: str) -> Image.Image:
    """The thumbnail of workflows/ui/<name>.json."""
    if name in ("svd_vcut", "svd_baseline"):
        return image_to_frames(title, "SVD-XT, one image -> 14 frames of 1024x576, 6 fps", 14, 3, 16 / 9,
                               NO_SAMPLE.format("SVD"))
    if name == "sv3d_vcut":
        return orbit(title, "SV3D_p, one image -> 21 views of 576x576 orbiting the object",
                     21, NO_SAMPLE.format("SV3D"))
    if name == "zero123_vcut":
        return image_to_frames(title, "Stable Zero123, one image -> 8 views of 256x256, 45 degrees apart", 8, 3,
                               1.0, NO_SAMPLE.format("Stable Zero123"), [f"{45 * i}\u00b0" for i in range(8)])
    if name == "etc_text_to_video":
        return etc_sample(os.path.join(docs, "etc_demo_strip.png"), title,
                          "the first command's model, 8 frames in one 2x4 grid, 4 fps",
                          "Made by this graph: \"a green square moving up\", a caption held out of training.")
    if name == "etc_long_video":
        return grid(title, "your ETC fine-tune of SD 2.1: 256 frames of 256x160 in one 16x16 grid", 16,
                    "No sample shown: no ETC weights are published (train your own).")
    if name == "etc_training_launch":
        return training(title, "fine-tune SD 2.1 into ETC on your clips", "A short first run; the paper trains "
                        "about 15000 steps (raise max_steps, resume).")
    demo = "ETC, the first command's model: 8 frames in one 2x4 grid, 4 fps"
    not_yet = "No sample shown yet: the frames marked given are kept, the graph makes the others."
    if name == "etc_image_to_video":
        return image_to_frames(title, demo, 8, 4, 1.0, not_yet, ["given"] + [str(i) for i in range(1, 8)])
    if name == "etc_keyframe_interpolation":
        return image_to_frames(title, demo, 8, 4, 1.0, not_yet,
                               ["given"] + [str(i) for i in range(1, 7)] + ["given"])
    if name == "etc_video_to_video":
        return image_to_frames(title, demo + ", from a source clip", 8, 4, 1.0,
                               "No sample shown yet: each frame is the source's, re-made at denoise 0.6.")
    if name == "etc_per_frame_prompts":
        return image_to_frames(title, demo, 8, 4, 1.0, "No sample shown yet: each frame follows the prompt of its "
                               "range.", ["red"] * 4 + ["green"] * 4)
    raise KeyError(name)
