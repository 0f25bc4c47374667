"""pytest plugin (pyproject.toml's addopts): collect the repository root as a plain folder, not a package.

The root holds the pack's ``__init__.py`` (ComfyUI imports the clone as a package). pytest would import it to
look for a module-level setup, under the clone folder's name; a folder whose name is no Python identifier, such
as the ``comfyui-etc-vcut`` the docs clone into, makes that a top-level ``__init__`` whose relative imports
fail, and every test errors at setup."""
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path, parent):
    if path == parent.config.rootpath:
        return pytest.Dir.from_parent(parent, path=path)
    return None
