import os
import shutil
import tempfile

import pytest


from etc_vcut_dev.comfy_host import ComfyServer

# A test runs ComfyUI when it uses a server fixture (marked here) or carries the comfyui marker itself.
HOST_FIXTURES = {"comfy_server", "fresh_server"}
# One pass peaked at 9 GB of test models in pytest's temp folder (2024 host, November 2026).
NEEDED_FREE_GB = 12


def pytest_sessionstart(session):
    """Refuse to start on a nearly full disk: past the first full write, every later test fails
    with an I/O error from safetensors or ComfyUI that does not say the disk is the cause."""
    temp = os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()
    free_gb = shutil.disk_usage(temp).free / 2**30
    if free_gb < NEEDED_FREE_GB:
        raise pytest.UsageError(f"the tests need {NEEDED_FREE_GB} GB free under {temp}, and it has {free_gb:.1f} GB: "
                                "free some space, or point PYTEST_DEBUG_TEMPROOT at a larger disk")


def pytest_collection_modifyitems(config, items):
    """Tests that use a server fixture get the ``comfyui`` marker. ETCVCUT_ONLY_HOST_TESTS=1 (scripts/test.sh's
    second host): tests without it give the same result on every host, so they are skipped there after
    running with the first host."""
    for item in items:
        if HOST_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.comfyui)
    if os.environ.get("ETCVCUT_ONLY_HOST_TESTS"):
        skip = pytest.mark.skip(reason="runs no ComfyUI; it ran with the first host")
        for item in items:
            if item.get_closest_marker("comfyui") is None:
                item.add_marker(skip)


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
    from etc_vcut_dev.tiny_diffusers import write_synthetic_data, write_tiny_sd
    root = tmp_path_factory.mktemp("train")
    return str(write_tiny_sd(str(root / "sd"))), write_synthetic_data(str(root / "data"))


@pytest.fixture(scope="session")
def served_setup(comfy_server, setup):
    """The tiny SD in the server's models/diffusers ("diffusers/train-sd") and the data in its input/, as a
    user keeps them; returns the data inputs of the training nodes."""
    pretrained, data = setup
    shutil.copytree(pretrained, f"{comfy_server.base}/models/diffusers/train-sd", dirs_exist_ok=True)
    shutil.copytree(os.path.dirname(data["video_manifest"]), f"{comfy_server.base}/input/train_data",
                    dirs_exist_ok=True)
    return {key: "train_data/" + os.path.basename(value) for key, value in data.items()}


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    """A tiny CLIP saved in transformers format (BPE vocabulary: the one ComfyUI ships)."""
    from etc_vcut_dev.tiny_diffusers import write_tiny_clip
    return write_tiny_clip(str(tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="session")
def sd2_checkpoint(tmp_path_factory):
    """(one SD 2.x .safetensors file as ComfyUI keeps it, the tiny diffusers folder it was made from)."""
    from etc_vcut_dev.tiny_diffusers import write_tiny_sd2_checkpoint
    root = tmp_path_factory.mktemp("sd2_file")
    return write_tiny_sd2_checkpoint(str(root / "tiny_sd2.safetensors"), str(root / "source")), str(root / "source")
