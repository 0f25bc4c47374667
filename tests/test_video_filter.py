"""CLIP-score video filter (eq. 5) with a small CLIP built from a config, on videos the test writes."""
import json
import os
import shutil

import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

from etc_core.data import video_filter
from etc_core.data.filter import main as filter_main
from etc_vcut_dev.refusals import refusal, tree_digest
from etc_vcut_dev.tiny_diffusers import write_moving_square as _moving_square


@pytest.fixture
def dataset(tmp_path):
    entries = []
    for i, (color, caption) in enumerate([((255, 0, 0), "a red square"), ((0, 255, 0), "a green square"),
                                          ((0, 0, 255), "a blue square moving right"), ((255, 255, 0), "yellow"),
                                          ((255, 255, 255), "a white box")]):
        _moving_square(str(tmp_path / f"v{i}.mp4"), color)
        entries.append({"video": f"v{i}.mp4", "caption": caption})
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    entries.append({"video": "broken.mp4", "caption": "unreadable"})
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return tmp_path, manifest


def test_clip_score_is_logit_scale_times_mean_cosine(clip_dir, tmp_path):
    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    _moving_square(str(tmp_path / "v.mp4"), (255, 0, 0))
    frames = video_filter.sampled_frames(str(tmp_path / "v.mp4"), 3)
    assert len(frames) == 3 and frames[0].shape == (48, 48, 3)
    score = video_filter.clip_score(model, processor, frames, "a red square")
    with torch.no_grad():
        text = processor(text=["a red square"], return_tensors="pt")
        t = model.get_text_features(**text)
        t = getattr(t, "pooler_output", t)[0]
        cosines = []
        for frame in frames:
            pixels = processor(images=[frame], return_tensors="pt")["pixel_values"]
            v = model.get_image_features(pixel_values=pixels)
            v = getattr(v, "pooler_output", v)[0]
            cosines.append(torch.dot(v, t) / (v.norm() * t.norm()))
        expected = float(model.logit_scale.exp() * torch.stack(cosines).mean())
    assert score == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_filter_keeps_top_fraction_skips_broken_and_resumes(clip_dir, dataset, monkeypatch, capsys):
    folder, manifest = dataset
    output = str(folder / "kept.jsonl")
    assert filter_main(["--input", str(manifest), "--output", output, "--alpha", "0.5", "--clip", clip_dir,
                        "--frames", "3"]) == 0
    marker, *scores = video_filter.read_jsonl(output + ".scores.jsonl")
    assert marker == video_filter.SCORES_MARKER and len(scores) == 6
    broken = [s for s in scores if s["video"].endswith("broken.mp4")]
    assert len(broken) == 1 and "cannot" in broken[0]["error"]
    readable = sorted((s for s in scores if "clip_score" in s), key=lambda s: s["clip_score"], reverse=True)
    kept = video_filter.read_jsonl(output)
    assert len(kept) == 3  # ceil(0.5 * 5 readable)
    assert [k["video"] for k in kept] == [s["video"] for s in readable[:3]]
    assert all(k["clip_score"] == s["clip_score"] for k, s in zip(kept, readable))

    # Resume: nothing is scored again, and a changed alpha reuses every score.
    monkeypatch.setattr(video_filter, "image_embeddings", lambda *a: pytest.fail("re-read a video"))
    monkeypatch.setattr(video_filter, "pair_score", lambda *a: pytest.fail("re-scored a pair"))
    assert filter_main(["--input", str(manifest), "--output", output, "--alpha", "0.2", "--clip", clip_dir]) == 0
    assert [k["video"] for k in video_filter.read_jsonl(output)] == [readable[0]["video"]]


def test_each_caption_of_one_video_gets_its_own_score_from_one_read(clip_dir, tmp_path, monkeypatch):
    """A manifest listing one video with several captions scores each pair; the video is read once."""
    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    _moving_square(str(tmp_path / "v.mp4"), (255, 0, 0))
    captions = ["a red square", "yellow", "a white box moving left"]
    entries = [{"video": str(tmp_path / "v.mp4"), "caption": c} for c in captions]
    reads = []
    sampled_frames = video_filter.sampled_frames
    monkeypatch.setattr(video_filter, "sampled_frames", lambda *a: reads.append(a) or sampled_frames(*a))
    kept = video_filter.filter_videos(entries, str(tmp_path / "kept.jsonl"), 1.0, model, processor, 3)
    frames = sampled_frames(str(tmp_path / "v.mp4"), 3)
    expected = {c: video_filter.clip_score(model, processor, frames, c) for c in captions}
    assert len(reads) == 1 and len(set(expected.values())) == 3
    assert {k["caption"]: k["clip_score"] for k in kept} == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_filter_rejects_bad_alpha(clip_dir, dataset):
    folder, manifest = dataset
    with pytest.raises(ValueError, match="fraction of videos to keep"):
        filter_main(["--input", str(manifest), "--output", str(folder / "k.jsonl"), "--alpha", "1.5",
                     "--clip", clip_dir])


def test_filter_never_overwrites_a_file_it_did_not_write(clip_dir, dataset, capsys):
    folder, manifest = dataset
    (folder / "notes.jsonl").write_text("user data\n")
    assert filter_main(["--input", str(manifest), "--output", str(folder / "notes.jsonl"), "--alpha", "0.5",
                        "--clip", clip_dir]) == 2
    assert capsys.readouterr().err.strip() == (f"error: output {folder}/notes.jsonl exists and was not written by "
                                               "this filter; pick another output name")
    assert (folder / "notes.jsonl").read_text() == "user data\n"
    assert not (folder / "notes.jsonl.scores.jsonl").exists()


@pytest.fixture
def served(comfy_server, clip_dir, dataset):
    """The CLIP in models/clip_vision (picked by name), the clips and manifest in input/."""
    folder, _ = dataset
    shutil.copytree(clip_dir, os.path.join(comfy_server.base, "models", "clip_vision", "tiny-clip"),
                    dirs_exist_ok=True)
    shutil.copytree(folder, os.path.join(comfy_server.base, "input", "filter_clips"), dirs_exist_ok=True)
    return comfy_server, folder


def _filter(manifest="filter_clips/pairs.jsonl", output="etc_data/kept.jsonl"):
    return {"f": {"class_type": "ETCVideoFilter", "inputs": {"manifest": manifest, "output": output, "alpha": 0.4,
                                                              "clip": "tiny-clip", "frames": 2}}}


def test_video_filter_node_in_comfyui(served):
    server, _ = served
    outputs = server.run(_filter())
    assert outputs["f"]["text"] == ["kept 2 of 6"]
    assert len(video_filter.read_jsonl(server.output_path("etc_data", "kept.jsonl"))) == 2


def test_video_filter_node_refuses_to_write_outside_output_or_over_foreign_files(served, tmp_path):
    server, folder = served
    victim = tmp_path / "victim.txt"
    victim.write_text("user data\n")
    foreign = server.output_path("someone_elses.jsonl")
    with open(foreign, "w") as f:
        f.write("user data\n")
    watched = [str(tmp_path), server.output_path(), os.path.join(server.base, "input")]
    before = tree_digest(*watched)
    for output, expected in ((str(victim), "output must be a path relative to ComfyUI's output/ folder"),
                             ("../victim.txt", "output may not contain '..'"),
                             ("someone_elses.jsonl", "output output/someone_elses.jsonl exists and was not written by "
                                                     "this filter")):  # no server path
        message, history = refusal(server, _filter(output=output))
        assert message.startswith(expected) and "user data" not in history
    message, _ = refusal(server, _filter(manifest=str(folder / "pairs.jsonl")))
    assert message.startswith("manifest must be a path relative to ComfyUI's input/ or models/ folder")
    assert tree_digest(*watched) == before
