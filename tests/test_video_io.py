"""etc_core.files.video_io without ComfyUI: each format round-trips frames and the workflow, metadata sits where
ComfyUI's frontend reads it, odd sizes, audio, atomic writes; and the labelled loss curve."""
import logging
import os
import struct

import av
import numpy as np
import pytest

from etc_core.files.loss_curve import LINE, loss_curve_image, loss_curve_layout, nice_ticks, tick_label
from etc_core.files.video_io import FORMATS, write_gif, write_video
from etc_vcut_dev.video_read import read_video_frames, read_video_metadata
from etc_vcut_dev import synthetic

METADATA = {"prompt": {"3": {"class_type": "ETCSampler", "inputs": {"text": "a {curly} ball"}}},
            "workflow": {"nodes": [{"id": 3, "type": "ETCSampler"}], "links": [], "version": 0.4}}
CODECS = {"h264-mp4": ("mp4", "h264"), "vp9-webm": ("webm", "vp9")}


def moving_square(frames=8, height=48, width=64):
    return synthetic.moving_square([(4 + 4 * t, 12) for t in range(frames)], 16, (220, 60, 30), height, width, 40)


def boxes(data: bytes, start: int, end: int) -> dict:
    """ISO-BMFF boxes between ``start`` and ``end``: {type: (payload start, box end)}."""
    found = {}
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        found.setdefault(kind.decode(), (start + 8, start + size))
        start += size
    return found


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_round_trips_frames_and_workflow(tmp_path, fmt):
    video = moving_square()
    path = write_video(str(tmp_path / f"v.{fmt}"), video, 8.0, fmt, 10, METADATA)
    decoded = read_video_frames(path)
    assert decoded.shape == video.shape
    assert np.abs(decoded.astype(int) - video).mean() < 3  # lossy, but the same picture
    assert read_video_metadata(path) == METADATA
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    if fmt in CODECS:
        with av.open(path) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.codec_context.pix_fmt) == (CODECS[fmt][1], "yuv420p")
            assert stream.average_rate == 8 and CODECS[fmt][0] in container.format.name


def test_mp4_metadata_is_moov_udta_meta_keys_ilst_at_the_front(tmp_path):
    """Where ComfyUI's frontend (getFromIsobmffFile) looks: a ``keys`` box naming the items of ``ilst``;
    ``moov`` before ``mdat`` so a long file's metadata lies in the bytes it reads."""
    data = open(write_video(str(tmp_path / "v.mp4"), moving_square(), 8.0, "h264-mp4", metadata=METADATA), "rb").read()
    top = boxes(data, 0, len(data))
    assert list(top)[:2] == ["ftyp", "moov"] and top["moov"][1] < top["mdat"][0]
    udta = boxes(data, *top["moov"])["udta"]
    meta = boxes(data, *udta)["meta"]
    items = boxes(data, meta[0] + 4, meta[1])  # meta is a full box: 4 bytes of version and flags
    keys = data[items["keys"][0]:items["keys"][1]]
    assert b"mdtaprompt" in keys and b"mdtaworkflow" in keys and "ilst" in items


def test_webm_metadata_is_uppercase_simple_tags_in_the_first_bytes(tmp_path):
    """ComfyUI's frontend (getFromWebmFile) reads SimpleTags named PROMPT/WORKFLOW from the first 2 MiB."""
    path = write_video(str(tmp_path / "v.webm"), moving_square(frames=64, height=256, width=256), 8.0, "vp9-webm",
                       metadata=METADATA)
    head = open(path, "rb").read()[:1 << 16]
    assert b"\x45\xa3\x86PROMPT" in head and b"\x45\xa3\x88WORKFLOW" in head  # TagName element, length, name
    assert b'"a {curly} ball"' in head


def test_odd_sizes_are_padded_with_a_note(tmp_path, caplog):
    video = moving_square(height=47, width=63)
    with caplog.at_level(logging.WARNING):
        decoded = read_video_frames(write_video(str(tmp_path / "odd.mp4"), video, 8.0))
    assert "63x47 padded to 64x48" in caplog.text
    assert decoded.shape == (8, 48, 64, 3)
    assert np.abs(decoded[:, :47, :63].astype(int) - video).mean() < 3
    assert read_video_frames(write_video(str(tmp_path / "odd.webp"), video, 8.0, "webp")).shape == video.shape


@pytest.mark.parametrize("fmt,codec", [("h264-mp4", "aac"), ("vp9-webm", "opus")])
def test_audio_is_muxed_and_cut_to_the_video(tmp_path, fmt, codec):
    rate = 44100
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * rate) / rate, dtype=np.float32)
    path = write_video(str(tmp_path / "a.v"), moving_square(frames=8), 8.0, fmt, audio=(np.stack([tone, tone]), rate))
    with av.open(path) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.channels) == (codec, 2)
        samples = sum(frame.samples for frame in container.decode(audio=0))
    # 8 frames at 8 fps: one second, not the three seconds given (encoder padding aside).
    assert 0.9 < samples / stream.rate < 1.2


@pytest.mark.parametrize("rate, encoded", [(11111, 12000), (44100, 44100), (100000, 96000), (5000, 7350)])
def test_aac_gets_a_rate_it_has(tmp_path, rate, encoded):
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate, dtype=np.float32)[None]
    path = write_video(str(tmp_path / "a.mp4"), moving_square(frames=8), 8.0, audio=(tone, rate))
    with av.open(path) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert stream.rate == encoded and 0.9 < samples / stream.rate < 1.2


def test_bad_input_is_refused_by_name_and_leaves_no_file(tmp_path):
    video = moving_square()
    with pytest.raises(ValueError, match="audio: WEBP has no audio track"):
        write_video(str(tmp_path / "a.webp"), video, 8.0, "webp", audio=(np.zeros((1, 100), np.float32), 8000))
    with pytest.raises(ValueError, match="crf 60 is outside 0-51"):
        write_video(str(tmp_path / "a.mp4"), video, 8.0, "h264-mp4", crf=60)
    with pytest.raises(ValueError, match="mono or stereo"):
        write_video(str(tmp_path / "a.mp4"), video, 8.0, audio=(np.zeros((6, 100), np.float32), 8000))
    with pytest.raises(ValueError, match="audio sample rate 0 is outside 1000-384000 Hz; resample"):
        write_video(str(tmp_path / "a.mp4"), video, 8.0, audio=(np.zeros((1, 100), np.float32), 0))
    with pytest.raises(TypeError):  # fails inside the muxer: the partial file is removed
        write_video(str(tmp_path / "a.mp4"), video, 8.0, metadata={"workflow": {"x": object()}})
    assert os.listdir(tmp_path) == []


def test_gif_preview_is_small_and_animated(tmp_path):
    frames = read_video_frames(write_gif(str(tmp_path / "p.gif"), moving_square(height=600, width=1200), 8.0))
    assert frames.shape == (8, 200, 400, 3) and not np.array_equal(frames[0], frames[-1])


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.5, 1.0) == [0.6, 0.8, 1.0]
    assert nice_ticks(11, 14) == [11, 12, 13, 14]
    assert nice_ticks(0.0123, 0.0871) == [0.02, 0.04, 0.06, 0.08]
    assert nice_ticks(2.0, 2.0) == [1.0, 1.5, 2.0, 2.5, 3.0]  # one value: a range around it
    assert nice_ticks(1e-14, 3e-14) == [1e-14, 1.5e-14, 2e-14, 2.5e-14, 3e-14]
    assert nice_ticks(-1.7e308, 1.7e308) == [] and nice_ticks(0.0, 5e-324) == []  # no step fits: no ticks


def test_tick_labels_differ_on_a_plateau():
    ticks = nice_ticks(2.3456, 2.3457)
    labels = [tick_label(t, ticks[1] - ticks[0]) for t in ticks]
    assert len(set(labels)) == len(labels) >= 3 and labels[0].startswith("2.3456")
    assert tick_label(0.5, 0.1) == "0.5" and tick_label(12.0, 2.0) == "12"
    assert tick_label(2e7, 5e6) == "2.0e+07" and tick_label(1e-14, 5e-15) == "1.0e-14"


@pytest.mark.parametrize("losses", [[], [0.3], [float("nan")] * 3, [1e308, -1e308, 1.0], [2.3456, 2.3457] * 50,
                                    list(np.linspace(5.0, -5.0, 20000))])
def test_loss_curve_draws_any_losses(losses):
    layout = loss_curve_layout(losses, first_step=1000)
    labels = layout["y_labels"]
    assert len(set(labels)) == len(labels)
    assert all(0 <= x <= 640 and 0 <= y <= 320 for x, y in layout["points"])  # inside the picture
    assert loss_curve_image(losses, first_step=1000).shape == (320, 640, 3)


def test_loss_curve_has_labelled_axes_and_the_last_value():
    layout = loss_curve_layout([1.0, 0.8, float("nan"), 0.5], first_step=11)
    assert (layout["x_label"], layout["y_label"], layout["note"]) == ("step", "loss", "step 14: 0.5")
    assert layout["steps"] == [11, 12, 14] and layout["values"] == [1.0, 0.8, 0.5]  # NaN left out, steps kept
    assert [t for t, _ in layout["x_ticks"]] == [11, 12, 13, 14] and len(layout["y_ticks"]) >= 3
    (x11, y11), (x12, y12), (x14, y14) = layout["points"]
    assert x11 < x12 < x14 and y11 < y12 < y14  # later steps right, lower losses lower in the picture
    assert abs((x14 - x12) - 2 * (x12 - x11)) < 1e-6  # steps to scale: the NaN step's place stays empty
    image = loss_curve_image([1.0, 0.8, float("nan"), 0.5], first_step=11)
    assert image.shape == (320, 640, 3) and image.dtype == np.uint8 and (image.min(axis=2) < 100).sum() > 500
    for x, y in layout["points"]:
        assert tuple(image[round(y), round(x)]) == LINE
    assert (image[5:25, 250:390].min(axis=2) < 100).any()  # the title is written
