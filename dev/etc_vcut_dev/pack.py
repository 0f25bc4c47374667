"""The pack imported the way ComfyUI's loader imports a custom node folder, in this process and without a host.

The loader turns the folder into a package named after it, so the pack's ``nodes/`` is reachable as
``<package>.nodes`` beside ComfyUI's own top-level ``nodes``. The pack imports ComfyUI only inside
functions, so its adapters can be unit-tested here; calling one that needs ComfyUI still needs a host.
"""
import importlib.util
import os
import sys

from etc_vcut_dev.comfy_host import PACK_DIR_NAME, REPO


def import_pack():
    """The pack's top-level package (cached in ``sys.modules`` under the folder name ComfyUI would give it)."""
    if PACK_DIR_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_DIR_NAME, os.path.join(REPO, "__init__.py"),
                                                      submodule_search_locations=[REPO])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_DIR_NAME] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            for name in [m for m in sys.modules if m == PACK_DIR_NAME or m.startswith(PACK_DIR_NAME + ".")]:
                del sys.modules[name]
            raise
    return sys.modules[PACK_DIR_NAME]


def pack_submodule(dotted: str):
    """A module of the pack by dotted name (``"nodes.input_checks"``). Attribute access on the package is not
    enough: an in-process ComfyUI (tests/test_host.py) re-imports the pack under the same name, and the new
    package object gets no attribute for submodules already in ``sys.modules``."""
    import_pack()
    return importlib.import_module(f"{PACK_DIR_NAME}.{dotted}")
