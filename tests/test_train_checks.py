"""Everything a run is given is checked before anything is written: each command-line finding of issue 12
as a test of the exit code, the one-line error (naming the field, file or line) and the folder left as
it was, with the corrected config then accepted in the same folder."""
import json
import os
import shutil

import pytest

from etc_vcut_dev.accelerate_launch import TrainingError, TrainingProcess
from etc_core.train import main as train_main
from etc_vcut_dev.refusals import tree_digest


def _values(setup, out, **overrides):
    pretrained, data = setup
    values = dict(pretrained=pretrained, output_dir=str(out), frames=4, layout="2x2", resolution=32, lr=1e-3,
                  max_steps=1, checkpoint_every=1, seed=3, **data)
    values.update(overrides)
    return values


def _train(tmp_path, values, capsys, *extra):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values) if isinstance(values, dict) else values)
    code = train_main(["--config", str(path), *extra])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("overrides, error", [
    ({"frames": 16, "layout": "3x3"}, "error: config field 'layout': layout 3x3 holds 9 frames, not frames=16; "
                                      "use one of: 4x4, 2x8, 8x2, 1x16, 16x1, or 'auto'"),
    ({"frames": "4"}, "error: config field 'frames' must be an integer >= 1; got a str"),
    ({"lr": -1.0}, "error: config field 'lr' must be a number > 0; got -1.0"),
    ({"mixed_precision": "fp8"}, "error: config field 'mixed_precision' must be one of ['no', 'fp16', 'bf16']; "
                                 "got a str"),
    ({"timestep_sampling": "late"}, "error: config field 'timestep_sampling' must be one of ['uniform', 'ramp']; "
                                    "got a str"),
    ({"pretrained": "/nowhere/sd21"}, "error: pretrained /nowhere/sd21 does not exist; give an SD 2.x .safetensors "
                                      "checkpoint or a diffusers folder"),
])
def test_a_refused_config_writes_nothing_and_the_corrected_one_runs(setup, tmp_path, capsys, overrides, error):
    out = tmp_path / "run"
    code, lines = _train(tmp_path, _values(setup, out, **overrides), capsys)
    assert (code, lines) == (2, [error])
    assert not out.exists()
    code, lines = _train(tmp_path, _values(setup, out), capsys)
    assert code == 0 and (out / "final" / "etc_fps.safetensors").exists()


def test_a_config_that_is_not_json_is_named_by_position(setup, tmp_path, capsys):
    assert _train(tmp_path, '{"pretrained": "x",\n  oops}', capsys) == (
        2, [f"error: {tmp_path}/config.json is not JSON (Expecting property name enclosed in double quotes at line 2 "
            "column 3)"])


def test_manifest_errors_name_the_file_and_line_and_never_the_text(setup, tmp_path, capsys):
    manifest = tmp_path / "videos.jsonl"
    manifest.write_text('{"video": "a.mp4", "caption": "ok"}\n\n{"video": "b.mp4", "secret": "s3cr3t", oops}\n')
    code, lines = _train(tmp_path, _values(setup, tmp_path / "run", video_manifest=str(manifest)), capsys)
    assert (code, lines) == (2, [f"error: {manifest} line 3: not JSON (Expecting property name enclosed in double "
                                 "quotes at column 40)"])
    manifest.write_text('{"video": "a.mp4", "caption": "ok"}\n{"video": "b.mp4", "caption": 7}\n')
    code, lines = _train(tmp_path, _values(setup, tmp_path / "run", video_manifest=str(manifest)), capsys)
    assert (code, lines) == (2, [f"error: {manifest} line 2: field 'caption' must be a string, got a int"])
    assert not (tmp_path / "run").exists()


@pytest.fixture
def broken_data(setup, tmp_path):
    """The synthetic videos plus a corrupt one and a missing one, all listed in the manifest."""
    _, data = setup
    folder = tmp_path / "clips"
    shutil.copytree(os.path.dirname(data["video_manifest"]), folder)
    (folder / "broken.mp4").write_bytes(b"\0" * 100)
    with open(folder / "videos.jsonl", "a") as f:
        f.write('{"video": "broken.mp4", "caption": "broken"}\n{"video": "gone.mp4", "caption": "gone"}\n')
    return folder


def test_unreadable_files_are_probed_up_front_skipped_and_named(setup, tmp_path, capsys, broken_data):
    """Every listed file is probed once at the start; a run (and its resume) never meets a bad one."""
    out = tmp_path / "run"
    values = _values(setup, out, video_manifest=str(broken_data / "videos.jsonl"), image_manifest=None,
                     label_folder=None, max_steps=4, checkpoint_every=2)
    code, lines = _train(tmp_path, values, capsys)
    report = (f"data: 2 unreadable or uncaptioned files left out: {broken_data}/broken.mp4 (cannot open as a video), "
              f"{broken_data}/gone.mp4 (missing)")
    assert code == 0 and report in lines
    values["max_steps"] = 6
    code, lines = _train(tmp_path, values, capsys, "--resume")
    assert code == 0 and "step 6/6" in lines[-1].split(" loss")[0]

    strict = dict(values, output_dir=str(tmp_path / "strict"), skip_unreadable=False)
    code, lines = _train(tmp_path, strict, capsys)  # a missing file is found before the models load
    assert (code, lines) == (2, [f"error: 1 unreadable or uncaptioned files left out: {broken_data}/gone.mp4 "
                                 "(missing); fix or remove them, or set skip_unreadable"])
    assert not (tmp_path / "strict").exists()
    with open(out / "skipped_files.txt") as f:  # the run folder says what the run never saw
        assert f.read() == f"{broken_data}/broken.mp4\tcannot open as a video\n{broken_data}/gone.mp4\tmissing\n"


def test_a_manifest_whose_only_video_is_missing_is_refused_naming_it(setup, tmp_path, capsys):
    only = tmp_path / "only.jsonl"
    only.write_text('{"video": "gone.mp4", "caption": "gone"}\n')
    values = _values(setup, tmp_path / "run", video_manifest=str(only), image_manifest=None, label_folder=None)
    code, lines = _train(tmp_path, values, capsys)
    assert code == 2 and lines[-1].startswith(f"error: no readable training data with a ratio above 0 (1 unreadable "
                                              f"or uncaptioned files left out: {tmp_path}/gone.mp4 (missing)): ")
    assert not (tmp_path / "run").exists()


def test_folder_datasets_with_same_name_captions(setup, tmp_path, capsys):
    """Videos and images as files with same-name .txt captions (a file without one is left out and named)."""
    from etc_core.data import TripleData
    _, data = setup
    source = os.path.dirname(data["video_manifest"])
    videos, images = tmp_path / "videos", tmp_path / "images" / "sub"
    images.mkdir(parents=True)
    videos.mkdir()
    for name in ("red", "green", "blue"):
        shutil.copy(f"{source}/{name}.mp4", videos)
        shutil.copy(f"{source}/{name}.png", images)
        (videos / f"{name}.txt").write_text(f"a {name} square moving right\n")
        (images / f"{name}.txt").write_text(f"a {name} square")
    os.remove(images / "blue.txt")
    log = []
    triple = TripleData(4, 32, str(videos), str(tmp_path / "images"), None, seed=1, log=log.append)
    assert [(os.path.basename(v["video"]), v["caption"]) for v in triple.videos] == [
        ("blue.mp4", "a blue square moving right"), ("green.mp4", "a green square moving right"),
        ("red.mp4", "a red square moving right")]
    assert [os.path.basename(i["image"]) for i in triple.images] == ["green.png", "red.png"]
    assert log == [f"data: 1 unreadable or uncaptioned files left out: {images}/blue.png (no same-name .txt caption)"]
    code, _ = _train(tmp_path, _values(setup, tmp_path / "run", video_manifest=str(videos),
                                       image_manifest=str(tmp_path / "images"), label_folder=None), capsys)
    assert code == 0


def test_a_folder_of_another_tool_or_run_is_never_written(setup, tmp_path, capsys):
    foreign = tmp_path / "other_tool"
    (foreign / "checkpoint-1").mkdir(parents=True)
    (foreign / "checkpoint-1" / "weights.bin").write_bytes(b"\1" * 32)
    before = tree_digest(foreign)
    code, lines = _train(tmp_path, _values(setup, foreign), capsys)
    assert (code, lines) == (2, [f"error: output_dir {foreign} is not empty and holds no run of this trainer "
                                 "(no run.json); pick a new or empty output_dir"])
    assert tree_digest(foreign) == before

    run = tmp_path / "run"
    assert _train(tmp_path, _values(setup, run), capsys)[0] == 0
    before = tree_digest(run)
    with pytest.raises(ValueError, match="holds a different run"):  # the launcher checks before it writes
        TrainingProcess(_values(setup, run, lr=5e-4))
    assert tree_digest(run) == before


def test_a_relative_output_dir_is_the_callers_and_process_errors_come_back_as_one_line(setup, tmp_path,
                                                                                      monkeypatch, broken_data):
    monkeypatch.chdir(tmp_path)
    run = TrainingProcess(_values(setup, "relative_run", max_steps=1))
    assert run.wait() == str(tmp_path / "relative_run" / "final")
    with open(tmp_path / "relative_run" / "launch_config.json") as f:
        assert json.load(f)["output_dir"] == str(tmp_path / "relative_run")

    lines = (broken_data / "videos.jsonl").read_text().splitlines()
    (broken_data / "present.jsonl").write_text("\n".join(line for line in lines if "gone" not in line))
    strict = TrainingProcess(_values(setup, "strict_run", video_manifest=str(broken_data / "present.jsonl"),
                                     skip_unreadable=False))  # the launch finds no missing file; decoding does
    with pytest.raises(TrainingError) as failed:
        strict.wait()
    assert str(failed.value) == (f"training failed: error: 1 unreadable or uncaptioned files left out: "
                                 f"{broken_data}/broken.mp4 (cannot open as a video); fix or remove them, or set "
                                 "skip_unreadable")
