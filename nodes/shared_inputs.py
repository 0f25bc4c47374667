"""Node inputs that several nodes share, in one place: a setting looks, reads and checks the same wherever
it appears (a node may give it its own tooltip with ``dataclasses.replace``)."""
from .node_spec import Input

ETC_CATEGORY = "video/ETC"
FRAMES = Input("frames", "INT", "frames per video (T), 1-1024; the grid holds all T of them",
               {"default": 16, "min": 1, "max": 1024})
LAYOUT = Input("layout", "STRING", "'auto' (the most square rows x cols) or RxC with R*C = frames, e.g. 2x4; "
               "frames fill the grid row by row", {"default": "auto"})
THETA = Input("theta", "FLOAT", "base of the mixed embedding's sinusoids (ETC eqs. 18-19), much larger than the "
              "grid; use the value the model was trained with (the trainer uses 10000)",
              {"default": 10000.0, "min": 1.0, "max": 1e9, "step": 1.0})
STRENGTH = Input("strength", "FLOAT", "scale of the mixed embedding added to the UNet's input: 1 as trained, "
                 "0 switches it off (the paper's ablation), 0-10",
                 {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
FPS = Input("fps", "INT", "frame rate the FPS embedding is told, 0-120: 0 frames of one label, 1-60 video, "
            "120 one still image; no effect with the untrained module", {"default": 8, "min": 0, "max": 120})
FRAME_WIDTH = Input("frame_width", "INT", "width of one frame in pixels, a multiple of 8 (one latent pixel is 8x8)",
                    {"default": 256, "min": 8, "max": 4096, "step": 8})
FRAME_HEIGHT = Input("frame_height", "INT", "height of one frame in pixels, a multiple of 8",
                     {"default": 256, "min": 8, "max": 4096, "step": 8})
BATCH_SIZE = Input("batch_size", "INT", "videos made at once: one grid each", {"default": 1, "min": 1, "max": 64})
MODEL = Input("model", "MODEL", "an SD 2.x (or 1.x) image UNet from Load Checkpoint or UNETLoader; video UNets "
              "such as SVD are refused")
