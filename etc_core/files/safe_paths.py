"""Path rules for strings that come from a graph (node inputs), not from the user's own command line.

A ComfyUI server runs graphs from anyone who can reach its port, so a node input that names a file is
resolved against a fixed list of folders (ComfyUI's input/, models/, output/) and refused when it is
absolute, climbs with ``..``, holds a NUL byte, or leads out of its folder through a symlink. Nothing here
touches a file. More folders come from the server's own configuration (the roots the caller passes), never
from the graph.
"""
import os

from .messages import quote


NAME_BYTES = 255  # the longest file or folder name Linux, macOS and Windows file systems take
PATH_BYTES = 3072  # of a node input; leaves room below Linux's 4096 for the server's folder and run files


class PathRuleError(ValueError):
    pass


def check_name_lengths(name: str, value: str):
    """Refuse a path the file system would reject with a bare "File name too long" naming no input."""
    longest = max((len(part.encode("utf-8", "surrogatepass")) for part in value.replace("\\", "/").split("/")),
                  default=0)
    if longest > NAME_BYTES:
        raise PathRuleError(f"{name} holds a file or folder name of {longest} bytes, and file systems take at most "
                            f"{NAME_BYTES}; shorten it")
    if len(value.encode("utf-8", "surrogatepass")) > PATH_BYTES:
        raise PathRuleError(f"{name} is {len(value)} characters long; give a path of at most {PATH_BYTES} bytes")


def check_no_nul(name: str, value: str):
    """A NUL byte cuts a path where the C libraries see it (PyAV would write to the cut name) and makes
    Python's own file calls fail without naming the input: refuse it first, naming the input."""
    if "\x00" in value:
        raise PathRuleError(f"{name} {quote(value)} contains a NUL byte (\\x00); remove it")


def is_inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it once every symlink on the way is followed."""
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _candidates(value: str, name: str, roots: dict) -> list:
    """``[(label, root, joined path)]`` for a graph string; refuses absolute paths and ``..``."""
    where = " or ".join(f"{label}/" for label in roots)
    if not isinstance(value, str) or not value.strip():
        raise PathRuleError(f"{name} is empty; give a path inside ComfyUI's {where} folder")
    check_no_nul(name, value)
    check_name_lengths(name, value)
    if os.path.isabs(value) or (os.name == "nt" and os.path.splitdrive(value)[0]):
        raise PathRuleError(f"{name} must be a path relative to ComfyUI's {where} folder, not an absolute path "
                            "(more folders: a key in extra_model_paths.yaml, see the README)")
    if ".." in value.replace("\\", "/").split("/"):
        raise PathRuleError(f"{name} may not contain '..'; give a path inside ComfyUI's {where} folder")
    return [(label, root, os.path.join(root, value)) for label, roots_of_label in roots.items()
            for root in roots_of_label]


def resolve_existing(value: str, name: str, roots: dict) -> str:
    """The absolute path of an existing file or folder that ``value`` names inside one of ``roots``.

    ``roots`` maps a label shown in errors ("input", "models") to its folders, tried in order.
    """
    where = " or ".join(f"{label}/" for label in roots)
    for _, root, path in _candidates(value, name, roots):
        if os.path.lexists(path):
            if not is_inside(path, root):
                raise PathRuleError(f"{name} leads out of ComfyUI's {where} folder through a symlink; "
                                    "give a path inside it")
            return os.path.abspath(path)
    raise PathRuleError(f"{name} {value!r} is not in ComfyUI's {where} folder; put it there and give its "
                        "path relative to that folder")


def resolve_new(value: str, name: str, roots: dict) -> str:
    """The absolute path ``value`` names inside the first of ``roots`` (it need not exist yet)."""
    where = " or ".join(f"{label}/" for label in roots)
    label, root, path = _candidates(value, name, roots)[0]
    if not is_inside(path, root):
        raise PathRuleError(f"{name} leads out of ComfyUI's {where} folder through a symlink; give a path inside it")
    return os.path.abspath(path)
