"""ETC: text-to-video with a plain SD 2.x UNet (pure PyTorch, no ComfyUI import)."""
from .boundary_error import boundary_error_rate, boundary_ok
from .fps_embedding import (FPSConditionedTimeEmbedding, FPSEmbedding, base_model_fingerprint, check_fps,
                            load_fps_module, save_fps_module, timestep_embedding)
from .grid import GridLayoutError, layouts, pack, parse_layout, unpack
from .mixed_embedding import MixedEmbeddingInput, mixed_embedding

__all__ = [
    "boundary_error_rate", "boundary_ok",
    "FPSConditionedTimeEmbedding", "FPSEmbedding", "base_model_fingerprint", "check_fps", "load_fps_module",
    "save_fps_module", "timestep_embedding", "GridLayoutError", "layouts", "pack", "parse_layout", "unpack",
    "MixedEmbeddingInput", "mixed_embedding",
]
