"""How the pack reads weights from a folder: local files only, and weights only from .safetensors, never a
pickled .bin (folders under ComfyUI's models/ and input/ may come from anyone)."""
SAFE_LOAD = {"local_files_only": True, "use_safetensors": True}
