"""ComfyUI's folders as the roots of the path rules in etc_core.files.safe_paths (see the README, "Training ETC").

Data and models are read from input/ or models/ (every folder ComfyUI knows for a model type, so
extra_model_paths.yaml is honoured: a key such as ``etc_vcut_data: /data/clips`` there adds a folder);
runs and filter results are written under output/.
"""
import contextlib
import os

from ..etc_core.files.safe_paths import PathRuleError, is_inside, resolve_existing, resolve_new

TRANSFORMERS_CLIP_TYPES = ("clip_vision", "clip")


def _model_folders() -> list:
    import folder_paths
    folders = [folder_paths.models_dir]
    for name, (paths, _) in folder_paths.folder_names_and_paths.items():
        if name != "custom_nodes":
            folders += [p for p in paths if p not in folders]
    return folders


def read_roots() -> dict:
    import folder_paths
    return {"input": [folder_paths.get_input_directory()], "models": _model_folders()}


def input_path(value: str, name: str) -> str:
    """An existing file or folder under input/ or models/."""
    return resolve_existing(value, name, read_roots())


def output_path(value: str, name: str) -> str:
    """A path under output/ (it need not exist)."""
    import folder_paths
    return resolve_new(value, name, {"output": [folder_paths.get_output_directory()]})


def _named_folders() -> list:
    """``[(folder, name)]``: ComfyUI's folders as errors name them, longest path first."""
    import folder_paths
    named = [(folder_paths.get_output_directory(), "output"), (folder_paths.get_input_directory(), "input"),
             (folder_paths.get_temp_directory(), "temp"), (folder_paths.models_dir, "models")]
    for key, (paths, _) in folder_paths.folder_names_and_paths.items():  # extra_model_paths.yaml folders
        named += [(path, key) for path in paths if not any(is_inside(path, root) for root, _ in named[:4])]
    named.append((folder_paths.base_path, "ComfyUI"))
    forms = {(form.rstrip(os.sep), name) for folder, name in named
             for form in (os.path.abspath(folder), os.path.realpath(folder))}
    return sorted(forms, key=lambda pair: -len(pair[0]))


def without_server_paths(text: str) -> str:
    """``text`` with the server's folders named as a user knows them (``output/etc_runs/run1``), never by
    their absolute paths."""
    for folder, name in _named_folders():
        text = text.replace(folder + os.sep, name + "/").replace(folder, name)
    return text


@contextlib.contextmanager
def server_paths_hidden():
    """Refusals raised inside name ComfyUI's folders, not the server's absolute paths."""
    try:
        yield
    except (ValueError, OSError) as error:
        text = without_server_paths(str(error))
        if isinstance(error, OSError):  # its text comes from errno and filename, not args
            raise OSError(text) from None
        error.args = (text,)
        raise


def allowed_roots() -> list:
    """Every folder the media a manifest lists may live in."""
    import folder_paths
    return [folder_paths.get_input_directory()] + _model_folders()


def _folders_holding(kinds, marker: str) -> dict:
    """{name: folder} of the subfolders of ComfyUI's ``kinds`` model folders that hold ``marker``."""
    import folder_paths
    found = {}
    for kind in kinds:
        try:
            roots = folder_paths.get_folder_paths(kind)  # maps legacy names (clip -> text_encoders) where needed
        except KeyError:
            roots = []
        for root in roots:
            if os.path.isdir(root):
                for entry in sorted(os.listdir(root)):
                    if os.path.exists(os.path.join(root, entry, marker)):
                        found.setdefault(entry, os.path.join(root, entry))
    return found


def clip_folders() -> dict:
    """{name: folder} of transformers CLIP folders (config.json inside) in models/clip_vision and models/clip."""
    return _folders_holding(TRANSFORMERS_CLIP_TYPES, "config.json")


def clip_folder(name: str) -> str:
    folders = clip_folders()
    if name not in folders:
        raise PathRuleError(f"clip {name!r} is not a CLIP folder (transformers format, with config.json) in "
                            "models/clip_vision or models/clip")
    return folders[name]


def pretrained_choices() -> list:
    """SD 2.x single files from models/checkpoints, then diffusers folders from models/diffusers."""
    import folder_paths
    files = [n for n in folder_paths.get_filename_list("checkpoints") if n.endswith(".safetensors")]
    return files + [f"diffusers/{name}" for name in _diffusers_folders()]


def _diffusers_folders() -> dict:
    return _folders_holding(("diffusers",), "unet")


def pretrained_path(name: str) -> str:
    import folder_paths
    folders = _diffusers_folders()
    if name.startswith("diffusers/") and name[len("diffusers/"):] in folders:
        return folders[name[len("diffusers/"):]]
    if name.endswith(".safetensors") and name in folder_paths.get_filename_list("checkpoints"):
        return folder_paths.get_full_path("checkpoints", name)
    raise PathRuleError(f"pretrained {name!r} is neither a .safetensors file in models/checkpoints nor a diffusers "
                        "folder in models/diffusers; put the SD 2.x checkpoint there and pick it by name")

