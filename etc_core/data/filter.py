"""``python -m etc_core.data.filter``: keep the top alpha fraction of caption-video pairs by CLIP score.

    python -m etc_core.data.filter --input pairs.jsonl --output kept.jsonl --alpha 0.3 --clip /path/to/clip

``--input`` is JSONL with ``{"video": path, "caption": text}`` per line (relative paths are taken from
the file's folder), or a folder of videos with same-name ``.txt`` captions. ``--clip`` is a local CLIP
folder (transformers format, weights as .safetensors). Re-running resumes; a file the filter did not write is never replaced.
"""
import argparse
import sys

from ..files.media_header import MAX_FRAME_PIXELS
from .manifest import read_manifest
from .video_filter import check_filter_output, filter_videos, load_clip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--alpha", type=float, required=True, help="fraction to keep, in (0, 1]")
    parser.add_argument("--clip", required=True, help="local CLIP model folder (transformers format)")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per video")
    parser.add_argument("--max-frame-pixels", type=int, default=MAX_FRAME_PIXELS, help="videos whose frames have "
                        "more pixels (from the container's header) are left out, with the reason in the scores")
    args = parser.parse_args(argv)
    try:
        entries, _ = read_manifest(args.input, "video")
        check_filter_output(args.output)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, processor = load_clip(args.clip)
    kept = filter_videos(entries, args.output, args.alpha, model, processor, args.frames,
                         progress=lambda i, n: print(f"\rscored {i}/{n}", end="", file=sys.stderr),
                         max_pixels=args.max_frame_pixels)
    print(f"\nkept {len(kept)} of {len(entries)} -> {args.output} (all scores: {args.output}.scores.jsonl)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
