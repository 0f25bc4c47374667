"""CLIP-score video filter (ETC eq. 5).

    score(video, caption) = mean over sampled frames f of  logit_scale * cos(E_img(f), E_txt(caption))

with the CLIP model's own (exponentiated) logit scale. The top ``alpha`` fraction of the readable
videos is kept. Every score goes to ``<output>.scores.jsonl`` as it is computed, so an interrupted run
resumes where it stopped; a video that cannot be read is recorded with its error and skipped. The scores
file starts with a marker line, and the filter writes over ``output`` only when that file says it wrote it.
"""
import json
import math
import os

import numpy as np
import torch

from .manifest import read_jsonl, write_jsonl_atomic
from .video_frames import VideoReadError, opened_video, read_frames

SCORES_MARKER = {"etc_filter_scores": 1}


def check_filter_output(output: str) -> str:
    """The scores path for ``output``; refuses files the filter did not write (it never replaces them)."""
    scores = output + ".scores.jsonl"
    for path in (output, scores):
        if os.path.lexists(path) and not os.path.isfile(path):
            raise ValueError(f"output {path} exists and is not a file; pick another output name")
    if os.path.exists(scores):
        with open(scores, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        try:
            ours = json.loads(first) == SCORES_MARKER
        except ValueError:
            ours = False
        if not ours:
            raise ValueError(f"{scores} exists and was not written by this filter; pick another output name")
    elif os.path.exists(output):
        raise ValueError(f"output {output} exists and was not written by this filter; pick another output name")
    return scores


def sample_frame_indices(total: int, count: int):
    """``count`` indices spread evenly over ``total`` frames (centres of equal segments)."""
    count = min(count, total)
    return [min(total - 1, int((i + 0.5) * total / count)) for i in range(count)]


def sampled_frames(path: str, count: int):
    """RGB uint8 frames sampled evenly from the video at ``path``."""
    with opened_video(path) as (capture, total, _):
        return read_frames(capture, sample_frame_indices(total, count), path)


@torch.no_grad()
def clip_score(model, processor, frames, caption: str) -> float:
    """Eq. 5 for one video: logit scale x cosine similarity, averaged over ``frames``."""
    inputs = processor(text=[caption], images=[np.asarray(f) for f in frames], return_tensors="pt",
                       padding=True, truncation=True)
    device = next(model.parameters()).device
    image = model.get_image_features(pixel_values=inputs["pixel_values"].to(device))
    text = model.get_text_features(input_ids=inputs["input_ids"].to(device),
                                   attention_mask=inputs["attention_mask"].to(device))
    image, text = (getattr(t, "pooler_output", t) for t in (image, text))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return float((model.logit_scale.exp() * image @ text.T).mean())


def filter_videos(entries, output: str, alpha: float, model, processor, frames: int = 8, progress=None):
    """Score every ``{"video", "caption"}`` entry, keep the top ``alpha`` fraction, write ``output``.

    Returns the kept entries (each with its ``clip_score``). Scores already in
    ``<output>.scores.jsonl`` are reused, so a second call resumes an interrupted run.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha is the fraction of videos to keep, in (0, 1]; got {alpha}")
    scores_path = check_filter_output(output)
    done = {row["video"]: row for row in read_jsonl(scores_path)[1:]} if os.path.exists(scores_path) else {}
    if not os.path.exists(scores_path):
        with open(scores_path, "w") as log:
            log.write(json.dumps(SCORES_MARKER) + "\n")
    with open(scores_path, "a") as log:
        for i, entry in enumerate(entries):
            if entry["video"] not in done:
                row = {"video": entry["video"], "caption": entry["caption"]}
                try:
                    row["clip_score"] = clip_score(model, processor, sampled_frames(entry["video"], frames),
                                                   entry["caption"])
                except VideoReadError as e:
                    row["error"] = str(e)
                log.write(json.dumps(row) + "\n")
                log.flush()
                done[entry["video"]] = row
            if progress:
                progress(i + 1, len(entries))
    scored = [{**entry, "clip_score": done[entry["video"]]["clip_score"]} for entry in entries
              if "clip_score" in done[entry["video"]]]
    keep = math.ceil(alpha * len(scored))
    kept = sorted(scored, key=lambda e: e["clip_score"], reverse=True)[:keep]
    write_jsonl_atomic(output, kept)
    return kept
