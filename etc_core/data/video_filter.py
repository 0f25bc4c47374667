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
from ..files.media_header import MAX_FRAME_PIXELS
from ..files.safe_load import SAFE_LOAD
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


def load_clip(folder: str):
    """(CLIP model in eval mode, its processor) from a local transformers folder, weights from .safetensors only."""
    from transformers import CLIPModel, CLIPProcessor
    return (CLIPModel.from_pretrained(folder, **SAFE_LOAD).eval(),
            CLIPProcessor.from_pretrained(folder, local_files_only=True))


def sample_frame_indices(total: int, count: int):
    """``count`` indices spread evenly over ``total`` frames (centres of equal segments)."""
    count = min(count, total)
    return [min(total - 1, int((i + 0.5) * total / count)) for i in range(count)]


def sampled_frames(path: str, count: int, max_pixels: int = MAX_FRAME_PIXELS):
    """RGB uint8 frames sampled evenly from the video at ``path`` (refused above ``max_pixels`` a frame)."""
    with opened_video(path, max_pixels) as (capture, total, _):
        return read_frames(capture, sample_frame_indices(total, count), path)


def _normalized(features):
    features = getattr(features, "pooler_output", features)
    return features / features.norm(dim=-1, keepdim=True)


@torch.no_grad()
def image_embeddings(model, processor, frames) -> torch.Tensor:
    """Unit CLIP image embeddings [F, D] of ``frames``: what a video contributes to every caption's score."""
    pixels = processor(images=[np.asarray(f) for f in frames], return_tensors="pt")["pixel_values"]
    return _normalized(model.get_image_features(pixel_values=pixels.to(next(model.parameters()).device)))


@torch.no_grad()
def pair_score(model, processor, images: torch.Tensor, caption: str) -> float:
    """Eq. 5 for one (video, caption) pair from the video's :func:`image_embeddings`."""
    inputs = processor(text=[caption], return_tensors="pt", padding=True, truncation=True)
    device = images.device
    text = _normalized(model.get_text_features(input_ids=inputs["input_ids"].to(device),
                                               attention_mask=inputs["attention_mask"].to(device)))
    return float((model.logit_scale.exp() * images @ text.T).mean())


def clip_score(model, processor, frames, caption: str) -> float:
    """Eq. 5 for one video: logit scale x cosine similarity, averaged over ``frames``."""
    return pair_score(model, processor, image_embeddings(model, processor, frames), caption)


def _pair(entry) -> tuple:
    return entry["video"], entry["caption"]


def filter_videos(entries, output: str, alpha: float, model, processor, frames: int = 8, progress=None,
                  max_pixels: int = MAX_FRAME_PIXELS):
    """Score every ``{"video", "caption"}`` entry, keep the top ``alpha`` fraction, write ``output``.

    Each (video, caption) pair gets its own score: one video listed with several captions is scored
    against each. A video's frames are read and embedded once per run and reused for its other captions.
    Returns the kept entries (each with its ``clip_score``). Scores already in
    ``<output>.scores.jsonl`` are reused, so a second call resumes an interrupted run. A video that cannot
    be read, or whose frames are above ``max_pixels`` (from its header), is recorded there with the reason.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha is the fraction of videos to keep, in (0, 1]; got {alpha}")
    scores_path = check_filter_output(output)
    done = {_pair(row): row for row in read_jsonl(scores_path)[1:]} if os.path.exists(scores_path) else {}
    if not os.path.exists(scores_path):
        with open(scores_path, "w") as log:
            log.write(json.dumps(SCORES_MARKER) + "\n")
    embedded = {}  # video -> its image embeddings, or the VideoReadError it gave
    with open(scores_path, "a") as log:
        for i, entry in enumerate(entries):
            if _pair(entry) not in done:
                row = {"video": entry["video"], "caption": entry["caption"]}
                if entry["video"] not in embedded:
                    try:
                        embedded[entry["video"]] = image_embeddings(model, processor,
                                                                    sampled_frames(entry["video"], frames, max_pixels))
                    except VideoReadError as e:
                        embedded[entry["video"]] = e
                images = embedded[entry["video"]]
                if isinstance(images, VideoReadError):
                    row["error"] = str(images)
                else:
                    row["clip_score"] = pair_score(model, processor, images, entry["caption"])
                log.write(json.dumps(row) + "\n")
                log.flush()
                done[_pair(entry)] = row
            if progress:
                progress(i + 1, len(entries))
    scored = [{**entry, "clip_score": done[_pair(entry)]["clip_score"]} for entry in entries
              if "clip_score" in done[_pair(entry)]]
    keep = math.ceil(alpha * len(scored))
    kept = sorted(scored, key=lambda e: e["clip_score"], reverse=True)[:keep]
    write_jsonl_atomic(output, kept)
    return kept
