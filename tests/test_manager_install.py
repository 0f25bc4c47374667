"""Install the pack the way ComfyUI-Manager does: its own CLI (comfyui-manager from the registry)
clones the repository from a git URL into the host's custom_nodes and pip-installs requirements.txt
into the host's environment; the host then lists every node. The git URL is served by `git daemon`
on 127.0.0.1, so nothing leaves the machine."""
import os
import shutil
import subprocess
import sys
import time

import pytest

from etc_vcut_dev.comfy_host import REPO, ComfyServer, comfyui_path, free_port

pytest.importorskip("cm_cli", reason="pip install comfyui-manager (requirements-test.txt has it)")
pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(
    not os.path.exists(os.path.join(comfyui_path(), "utils", "extra_config.py")),
    reason="comfyui-manager 4.x (the registry's) needs ComfyUI >= 0.3; run with COMFYUI_PATH=<current ComfyUI>")]
PACK_NODES = {"VCUTPatchSVD", "VCUTGuidanceCutoff", "ETCEmptyGridLatent", "ETCGridPackLatent", "ETCGridUnpackLatent",
              "ETCGridPackImage", "ETCGridUnpackImage", "ETCMixedEmbedding", "ETCFPSConditioning", "ETCSampler",
              "ETCSaveVideo", "ETCVideoFilter", "ETCTrainer", "ETCTrainCommand", "ETCKeyframes",
              "ETCPerFrameConditioning"}


@pytest.fixture
def git_url(tmp_path):
    served = tmp_path / "git"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", REPO, str(served / "comfyui-etc-vcut.git")], check=True)
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}",
                               "--listen=127.0.0.1", f"--port={port}", str(served)])
    url = f"git://127.0.0.1:{port}/comfyui-etc-vcut.git"
    for _ in range(50):
        if subprocess.run(["git", "ls-remote", url], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    yield url
    daemon.terminate()
    daemon.wait()


def test_manager_cli_installs_from_git_url_and_host_lists_every_node(git_url, tmp_path):
    host = str(tmp_path / "ComfyUI")
    shutil.copytree(comfyui_path(), host, ignore=shutil.ignore_patterns("__pycache__", "*.db", "user"))
    result = subprocess.run([sys.executable, "-m", "cm_cli", "install", git_url], cwd=host, capture_output=True,
                            text=True, timeout=600, env=dict(os.environ, COMFYUI_PATH=host))
    assert result.returncode == 0, result.stdout + result.stderr
    installed = os.path.join(host, "custom_nodes", "comfyui-etc-vcut")
    assert "[INSTALLED]" in result.stdout and os.path.exists(os.path.join(installed, "__init__.py"))
    assert "requirements.txt" in os.listdir(installed) and "pip" in result.stdout  # requirements went through pip
    with ComfyServer(str(tmp_path / "instance"), comfy=host, with_fixtures=False, with_pack=False) as server:
        listed = {name for name, entry in server.get("/object_info").items()
                  if entry["category"] in ("video/ETC", "video/VCUT")}
        assert listed == PACK_NODES
        assert installed in server.log() or "comfyui-etc-vcut" in server.log()
