"""The training loss as a picture: a labelled matplotlib plot, as a Figure or as RGB pixels."""
import numpy as np


def loss_curve_figure(losses, first_step: int = 1, width: int = 640, height: int = 320, dpi: int = 100):
    """A matplotlib Figure of the training loss against the step (``first_step`` is the step of
    ``losses[0]``), with labelled axes, ticks and the last value written on the plot."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    axes = figure.add_subplot()
    values = np.asarray(losses, np.float64)
    steps = first_step + np.arange(len(values))
    finite = np.isfinite(values)
    axes.plot(steps[finite], values[finite], color="#1f4fc8", linewidth=1.5, marker="." if len(values) < 50 else None)
    if finite.any():
        last = np.flatnonzero(finite)[-1]
        axes.annotate(f"step {steps[last]}: {values[last]:.4g}", (steps[last], values[last]),
                      textcoords="offset points", xytext=(-6, 8), ha="right", fontsize=9,
                      bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(f"training loss ({int(finite.sum())} steps)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    return figure


def loss_curve_image(losses, first_step: int = 1) -> np.ndarray:
    """:func:`loss_curve_figure` as RGB uint8 [320, 640, 3]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(loss_curve_figure(losses, first_step))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
