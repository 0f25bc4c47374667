"""Small helpers over ComfyUI's ModelPatcher that differ between ComfyUI versions."""


def current_object(patcher, name: str):
    """The module in use at ``name``: an earlier object patch if any, else the model's own."""
    if hasattr(patcher, "get_model_object"):
        return patcher.get_model_object(name)
    if name in patcher.object_patches:
        return patcher.object_patches[name]
    return patcher.model.get_submodule(name)
