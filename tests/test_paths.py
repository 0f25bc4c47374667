"""Path rules for graph strings (etc_core.files.safe_paths): relative, no '..', no symlink out of the root."""
import os

import pytest

from etc_core.files.safe_paths import PathRuleError, resolve_existing, resolve_new


@pytest.fixture
def roots(tmp_path):
    for sub in ("input/clips", "models/etc", "output", "elsewhere"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "input/clips/a.jsonl").write_text("{}\n")
    (tmp_path / "models/etc/b.txt").write_text("x")
    os.symlink(tmp_path / "elsewhere", tmp_path / "input/out_link")
    os.symlink(tmp_path / "input/clips", tmp_path / "input/in_link")
    return tmp_path, {"input": [str(tmp_path / "input")], "models": [str(tmp_path / "models")]}


def test_relative_names_resolve_in_the_first_root_holding_them(roots):
    base, read = roots
    assert resolve_existing("clips/a.jsonl", "video_manifest", read) == str(base / "input/clips/a.jsonl")
    assert resolve_existing("etc/b.txt", "label_folder", read) == str(base / "models/etc/b.txt")
    assert resolve_existing("in_link/a.jsonl", "video_manifest", read) == str(base / "input/in_link/a.jsonl")
    assert resolve_new("runs/r1", "output_dir", {"output": [str(base / "output")]}) == str(base / "output/runs/r1")


@pytest.mark.parametrize("value, message", [
    ("/etc/passwd", "video_manifest must be a path relative to ComfyUI's input/ or models/ folder"),
    ("clips/../../elsewhere", "video_manifest may not contain '..'"),
    ("out_link", "video_manifest leads out of ComfyUI's input/ or models/ folder through a symlink"),
    ("clips/missing.jsonl", "video_manifest 'clips/missing.jsonl' is not in ComfyUI's input/ or models/ folder"),
    ("", "video_manifest is empty"),
])
def test_graph_paths_outside_the_roots_are_refused(roots, value, message):
    with pytest.raises(PathRuleError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        resolve_existing(value, "video_manifest", roots[1])


def test_output_paths_are_refused_outside_output(roots):
    base, _ = roots
    os.symlink(base / "elsewhere", base / "output/escape")
    write = {"output": [str(base / "output")]}
    for value, message in ((str(base / "elsewhere/x"), "output_dir must be a path relative to ComfyUI's output/"),
                           ("../elsewhere", "output_dir may not contain '..'"),
                           ("escape/run", "output_dir leads out of ComfyUI's output/ folder through a symlink")):
        with pytest.raises(PathRuleError, match=message.replace("(", r"\(")):
            resolve_new(value, "output_dir", write)


def test_nul_bytes_are_refused_naming_the_input(roots):
    base, read = roots
    (base / "input" / "victim.mp4").write_bytes(b"x")
    for resolve, value in ((resolve_existing, "victim.mp4\0.jsonl"), (resolve_new, "a\0b")):
        with pytest.raises(PathRuleError, match=r"^video_manifest '.*' contains a NUL byte \(\\x00\); remove it$"):
            resolve(value, "video_manifest", read)
