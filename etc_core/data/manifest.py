"""Caption datasets: a JSONL manifest (one JSON object per line; media paths relative to its folder) or a
folder of media files with same-name ``.txt`` captions (``clip.mp4`` + ``clip.txt``, subfolders too).

Errors name the file and the line, never the text of a line: a manifest may be any file on the machine.
"""
import json
import os

from ..files.atomic import write_text_atomic
from ..files.safe_paths import check_no_nul, is_inside

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
EXTENSIONS = {"video": VIDEO_EXTENSIONS, "image": IMAGE_EXTENSIONS}


class ManifestError(ValueError):
    pass


def _numbered_jsonl(path: str):
    """``[(line number, value)]`` for the non-empty lines of ``path``; a bad line is reported by number."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as e:
                    raise ManifestError(f"{path} line {number}: not JSON ({e.msg} at column {e.colno})") from None
    return rows


def read_jsonl(path: str):
    return [row for _, row in _numbered_jsonl(path)]


def write_jsonl_atomic(path: str, rows):
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def check_inside(path: str, roots, where: str):
    if roots is not None and not any(is_inside(path, root) for root in roots):
        raise ManifestError(f"{where}: a file it lists leads outside ComfyUI's input/ and models/ folders; "
                            "keep the data inside them")


def _read_jsonl_manifest(path: str, media: str, roots):
    base = os.path.dirname(os.path.abspath(path))
    rows = _numbered_jsonl(path)
    for number, row in rows:
        where = f"{path} line {number}"
        if not isinstance(row, dict):
            raise ManifestError(f"{where}: each line must be a JSON object with {media!r} and 'caption'")
        for key in (media, "caption"):
            if key not in row:
                raise ManifestError(f"{where}: field {key!r} is missing (each line needs {media!r} and 'caption')")
            if not isinstance(row[key], str):
                raise ManifestError(f"{where}: field {key!r} must be a string, got a {type(row[key]).__name__}")
        check_no_nul(f"{where}: field {media!r}", row[media])
        row[media] = os.path.join(base, row[media])
        check_inside(row[media], roots, where)
    return [row for _, row in rows], []


def _read_caption_folder(folder: str, media: str, roots):
    rows, skipped = [], []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.lower().endswith(EXTENSIONS[media]):
                continue
            path = os.path.join(parent, name)
            caption = os.path.splitext(path)[0] + ".txt"
            for listed in (path, caption):
                check_inside(listed, roots, f"{folder}")
            if not os.path.isfile(caption):
                skipped.append((path, "no same-name .txt caption"))
                continue
            with open(caption, encoding="utf-8", errors="replace") as f:
                rows.append({media: path, "caption": f.read().strip()})
    return rows, skipped


def read_manifest(path: str, media: str, roots=None):
    """``(rows, skipped)``: rows ``{media: absolute path, "caption": text}`` from a JSONL file or a caption
    folder; ``skipped`` lists ``(path, reason)`` for folder files without a caption. With ``roots``, every
    listed file must lie inside one of those folders (a graph's manifest may list anything)."""
    if os.path.isdir(path):
        return _read_caption_folder(path, media, roots)
    if not os.path.isfile(path):
        raise ManifestError(f"{media} data {path} does not exist; give a JSONL manifest or a folder of "
                            f"{media}s with same-name .txt captions")
    return _read_jsonl_manifest(path, media, roots)
