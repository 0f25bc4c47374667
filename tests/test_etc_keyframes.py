"""etc_core.keyframes without a host: frame selections, cell masks, placing frames in their cells."""
import math

import pytest
import torch

from etc_core import pack, unpack
from etc_core.keyframes import (FrameSelectionError, cell_mask, check_denoise, parse_frame_numbers,
                                parse_frame_ranges, place_frames)


def test_frame_numbers_keep_their_order():
    assert parse_frame_numbers("7, 0", 8) == [7, 0]
    assert parse_frame_numbers(" 3 ", 8) == [3]


@pytest.mark.parametrize("text,match", [("8", "out of range.*use 0 to 7"), ("-1", "out of range"),
                                        ("0, 0", "frame 0 is given more than once"), ("", "names no frame"),
                                        ("x", "'x' is not a frame number")])
def test_bad_frame_numbers_are_refused_naming_the_input(text, match):
    with pytest.raises(FrameSelectionError, match="frame_numbers.*" + match):
        parse_frame_numbers(text, 8)


def test_frame_ranges():
    assert parse_frame_ranges("4-7, 0-1", 8) == [0, 1, 4, 5, 6, 7]
    assert parse_frame_ranges("3", 8) == [3]


@pytest.mark.parametrize("text,match", [("0-3, 3-5", "frame 3 is in two ranges"), ("5-3", "leaves no frame.*'3-5'"),
                                        (" , ", "names no frame"), ("0-8", "out of range")])
def test_bad_frame_ranges_are_refused(text, match):
    with pytest.raises(FrameSelectionError, match="frame_ranges.*" + match):
        parse_frame_ranges(text, 8)


def test_cell_mask_covers_exactly_the_chosen_cells():
    mask = cell_mask([1, 6], rows=2, cols=4, height=3, width=5)
    assert mask.shape == (6, 20)
    cells = unpack(mask[None], 2, 4)  # [8, 3, 5]
    assert [bool(c.eq(1).all()) for c in cells] == [k in (1, 6) for k in range(8)]
    assert all(bool(c.eq(0).all()) for k, c in enumerate(cells) if k not in (1, 6))


def test_placed_frames_land_in_their_cells_of_every_batch_item():
    grid = torch.randn(2, 4, 6, 20)
    frames = torch.randn(2, 4, 3, 5)
    out = place_frames(grid, frames, [5, 0], rows=2, cols=4)
    videos = unpack(out, 2, 4)  # [2, 8, 4, 3, 5]
    for b in range(2):
        assert torch.equal(videos[b, 5], frames[0]) and torch.equal(videos[b, 0], frames[1])
    kept = [k for k in range(8) if k not in (0, 5)]
    assert torch.equal(videos[:, kept], unpack(grid, 2, 4)[:, kept])
    assert torch.equal(pack(videos, 2, 4), out)


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5, math.nan, math.inf])
def test_denoise_outside_0_1_is_refused(value):
    with pytest.raises(ValueError, match=r"denoise.*set it in \(0, 1\]"):
        check_denoise(value)
    check_denoise(0.3)
