"""JSONL manifests: one JSON object per line; media paths are relative to the manifest's folder."""
import json
import os

MEDIA_KEYS = ("video", "image")


def read_jsonl(path: str):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl_atomic(path: str, rows):
    partial = path + ".partial"
    with open(partial, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    os.replace(partial, path)


def read_manifest(path: str, required=()):
    """Rows of ``path`` with media paths made absolute; every row must hold the ``required`` keys."""
    base = os.path.dirname(os.path.abspath(path))
    rows = read_jsonl(path)
    for row in rows:
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"{path}: every line needs {list(required)}; this one lacks {missing}: {row}")
        for key in MEDIA_KEYS:
            if key in row:
                row[key] = os.path.join(base, row[key])
    return rows
