"""Writes that leave either the old file or the whole new one: the new content goes to ``<path>.partial``
and replaces ``path`` in one rename; a failed write removes the partial file and leaves ``path`` as it was."""
import json
import os


def write_atomic(path: str, write):
    """Run ``write(partial)``, then move the partial file to ``path``; returns ``path``."""
    partial = path + ".partial"
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return path


def write_text_atomic(path: str, text: str) -> str:
    def write(partial):
        with open(partial, "w", encoding="utf-8") as f:
            f.write(text)
    return write_atomic(path, write)


def write_json_atomic(path: str, values) -> str:
    return write_text_atomic(path, json.dumps(values, indent=1))


def save_file_atomic(tensors: dict, path: str, metadata: dict = None) -> str:
    """safetensors' ``save_file`` through :func:`write_atomic`."""
    from safetensors.torch import save_file
    return write_atomic(path, lambda partial: save_file(tensors, partial, metadata=metadata))
