import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from comfy_host import ComfyServer  # noqa: E402


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """One real ComfyUI server for the session, with the pack and the fixture pack loaded."""
    server = ComfyServer(str(tmp_path_factory.mktemp("comfy")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    """(tiny diffusers SD folder, {video_manifest, image_manifest, label_folder}) for the trainer tests."""
    from tiny_diffusers import write_synthetic_data, write_tiny_sd
    root = tmp_path_factory.mktemp("train")
    return str(write_tiny_sd(str(root / "sd"))), write_synthetic_data(str(root / "data"))


@pytest.fixture(scope="session")
def sd2_checkpoint(tmp_path_factory):
    """(one SD 2.x .safetensors file as ComfyUI keeps it, the tiny diffusers folder it was made from)."""
    from tiny_diffusers import write_tiny_sd2_checkpoint
    root = tmp_path_factory.mktemp("sd2_file")
    return write_tiny_sd2_checkpoint(str(root / "tiny_sd2.safetensors"), str(root / "source")), str(root / "source")
