"""Node input specs that several nodes share, in one place: a setting looks and checks the same wherever
it appears."""
ETC_CATEGORY = "video/ETC"
FRAMES = ("INT", {"default": 16, "min": 1, "max": 1024})
LAYOUT = ("STRING", {"default": "auto", "tooltip": "'auto' (most square) or RxC with R*C = frames, e.g. 2x4"})
THETA = ("FLOAT", {"default": 10000.0, "min": 1.0, "max": 1e9, "step": 1.0})
STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
FPS = ("INT", {"default": 8, "min": 0, "max": 120, "tooltip": "0: frames of one label, 1-60: video, 120: still image"})
