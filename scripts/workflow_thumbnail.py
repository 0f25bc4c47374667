#!/usr/bin/env python3
"""A schematic .jpg thumbnail of a UI workflow (its nodes as titled boxes, its links as lines), for
example_workflows/ where no screenshot of the frontend was taken: ``workflow_thumbnail.py UI_JSON OUT_JPG``."""
import json
import sys

import cv2
import numpy as np


def thumbnail(ui: dict, width: int = 480) -> np.ndarray:
    boxes = {n["id"]: (n["pos"][0], n["pos"][1], n["size"][0], n["size"][1], n["type"]) for n in ui["nodes"]}
    left, top = min(b[0] for b in boxes.values()) - 40, min(b[1] for b in boxes.values()) - 40
    right = max(b[0] + b[2] for b in boxes.values()) + 40
    bottom = max(b[1] + b[3] for b in boxes.values()) + 40
    scale = width / (right - left)
    image = np.full((int((bottom - top) * scale), width, 3), 40, np.uint8)

    def at(x, y):
        return int((x - left) * scale), int((y - top) * scale)

    for link in ui["links"]:
        a, b = boxes[link[1]], boxes[link[3]]
        cv2.line(image, at(a[0] + a[2], a[1] + 40), at(b[0], b[1] + 40), (120, 200, 120), 2, cv2.LINE_AA)
    for x, y, w, h, kind in boxes.values():
        fill = (60, 120, 150) if kind == "Note" else (90, 90, 90)
        cv2.rectangle(image, at(x, y), at(x + w, y + h), fill, -1)
        cv2.rectangle(image, at(x, y), at(x + w, y + h), (200, 200, 200), 1)
        cv2.putText(image, kind[:16], at(x + 8, y + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return image


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        cv2.imwrite(sys.argv[2], thumbnail(json.load(f)), [cv2.IMWRITE_JPEG_QUALITY, 90])
