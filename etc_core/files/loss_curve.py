"""The training loss as a picture: a labelled plot drawn with Pillow, as RGB pixels.

Pillow rather than matplotlib: matplotlib's first use on a machine starts ``fc-list`` to list the system
fonts, and a node must not start a process. Pillow's own font is built in.
"""
import math

import numpy as np

WIDTH, HEIGHT = 640, 320
# Plot area inside the picture: room for the title above, tick labels and axis names left and below.
LEFT, RIGHT, TOP, BOTTOM = 84, WIDTH - 16, 28, HEIGHT - 44
LINE, GRID, TEXT = (31, 79, 200), (225, 225, 225), (20, 20, 20)


def nice_ticks(low: float, high: float, count: int = 5) -> list:
    """About ``count`` round values (steps of 1, 2 or 5 times a power of ten) from ``low`` to ``high``."""
    if not high > low:
        low, high = low - 0.5 * max(abs(low), 1.0), high + 0.5 * max(abs(high), 1.0)
    raw = (high - low) / max(count - 1, 1)
    if not (math.isfinite(raw) and raw > 1e-300):  # a span floats cannot divide into steps
        return []
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9)
    return [float(f"{k * step:.12g}") for k in range(first, math.floor(high / step + 1e-9) + 1)]


def tick_label(value: float, step: float) -> str:
    """``value`` written with as many decimals as the tick ``step`` needs, so neighbouring ticks differ."""
    decimals = max(0, -math.floor(math.log10(step)))
    if decimals <= 6 and abs(value) < 1e7:
        return f"{value:.{decimals}f}"
    digits = max(1, math.floor(math.log10(max(abs(value), step))) - math.floor(math.log10(step)))
    return f"{value:.{digits}e}"


def _padded(values, single: float, margin: float = 0.04):
    """The range of ``values`` widened by ``margin`` of its span on each side (by ``single`` around one
    value), so no point sits on the frame."""
    if not len(values):
        return 0.0, 1.0
    low, high = float(np.min(values)), float(np.max(values))
    pad = margin * (high - low) if high > low else single
    return low - pad, high + pad


def loss_curve_layout(losses, first_step: int = 1) -> dict:
    """Where everything goes: the finite losses as pixel points (NaN and infinite steps left out, the
    steps kept), integer step ticks, loss ticks with their labels, and the note with the last value."""
    values = np.asarray(losses, np.float64)
    steps = first_step + np.arange(len(values))
    shown = np.isfinite(values) & (np.abs(values) < 1e100)  # beyond that no float range holds the span
    steps, values = steps[shown], values[shown]
    x_low, x_high = _padded(steps, single=1.0)
    y_low, y_high = _padded(values, single=0.5 * max(abs(float(values[0])), 1.0) if len(values) else 1.0)
    x_ticks = [t for t in nice_ticks(x_low, x_high) if t == int(t)] if len(steps) else []
    y_ticks = nice_ticks(y_low, y_high) if len(values) else []

    def px(step):
        return LEFT + (step - x_low) / max(x_high - x_low, 1e-12) * (RIGHT - LEFT)

    def py(value):
        return BOTTOM - (value - y_low) / max(y_high - y_low, 1e-12) * (BOTTOM - TOP)

    return {
        "steps": [int(s) for s in steps], "values": [float(v) for v in values],
        "points": [(px(s), py(v)) for s, v in zip(steps, values)],
        "x_ticks": [(int(t), px(t)) for t in x_ticks], "y_ticks": [(t, py(t)) for t in y_ticks],
        "y_labels": [tick_label(t, y_ticks[1] - y_ticks[0]) if len(y_ticks) > 1 else f"{t:.4g}" for t in y_ticks],
        "title": f"training loss ({len(values)} step{'s' * (len(values) != 1)})", "x_label": "step", "y_label": "loss",
        "note": f"step {int(steps[-1])}: {values[-1]:.6g}" if len(values) else None,
    }


def loss_curve_image(losses, first_step: int = 1) -> np.ndarray:
    """:func:`loss_curve_layout` drawn: RGB uint8 [320, 640, 3]."""
    from PIL import Image, ImageDraw, ImageFont

    layout = loss_curve_layout(losses, first_step)
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=13), ImageFont.load_default(size=11)
    for (_, y), label in zip(layout["y_ticks"], layout["y_labels"]):
        draw.line([(LEFT, y), (RIGHT, y)], fill=GRID)
        draw.text((LEFT - 6, y), label, fill=TEXT, font=small, anchor="rm")
    for step, x in layout["x_ticks"]:
        draw.line([(x, TOP), (x, BOTTOM)], fill=GRID)
        draw.text((x, BOTTOM + 6), str(step), fill=TEXT, font=small, anchor="mt")
    draw.rectangle([LEFT, TOP, RIGHT, BOTTOM], outline=TEXT)
    points = layout["points"]
    if len(points) > 1:
        draw.line(points, fill=LINE, width=2, joint="curve")
    if len(points) < 50:
        for x, y in points:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=LINE)
    if layout["note"]:
        x, y = points[-1]
        right_half = x > (LEFT + RIGHT) / 2
        draw.text((x - 6 if right_half else x + 6, max(y - 8, TOP + 14)), layout["note"], fill=TEXT, font=small,
                  anchor="rb" if right_half else "lb")
    draw.text(((LEFT + RIGHT) / 2, TOP / 2), layout["title"], fill=TEXT, font=font, anchor="mm")
    draw.text(((LEFT + RIGHT) / 2, HEIGHT - 8), layout["x_label"], fill=TEXT, font=font, anchor="mb")
    label = Image.new("L", (60, 20), 0)
    ImageDraw.Draw(label).text((30, 10), layout["y_label"], fill=255, font=font, anchor="mm")
    image.paste(Image.new("RGB", label.size, TEXT).rotate(90, expand=True), (4, (TOP + BOTTOM) // 2 - 30),
                label.rotate(90, expand=True))
    return np.asarray(image).copy()
