"""ETCSaveVideo inside a real ComfyUI: each format is written with the prompt and workflow the server was
given, the ui output lists the file (and the GIF preview), prefixes cannot leave output/; and, on hosts
with the VIDEO type, core CreateVideo/SaveVideo take the pack's frames and the pack's saver takes
GetVideoComponents' frames, frame rate and audio."""
import json
import os

import pytest

from etc_core.files.video_io import EXTENSIONS, FORMATS
from etc_vcut_dev.video_read import read_video_frames, read_video_metadata
from etc_vcut_dev.graphs import etc_graph
from etc_vcut_dev.refusals import audio_samples

WORKFLOW = {"last_node_id": 1, "nodes": [{"id": 1, "type": "ETCSampler"}], "links": [], "version": 0.4}


def save_video_graph(prefix, fmt="h264-mp4", frames=4):
    graph = etc_graph(frames=frames, prefix=prefix)
    graph["video"]["inputs"].update({"format": fmt, "crf": 19})
    return graph


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_is_saved_with_prompt_and_workflow_and_previewed(comfy_server, fmt, tmp_path):
    graph = save_video_graph(f"fmt_{fmt}", fmt)
    ui = comfy_server.run(graph, workflow=WORKFLOW)["video"]
    assert ui["animated"] == [True]
    saved, *previews = ui["images"]
    assert saved["type"] == "output" and saved["filename"].endswith("." + EXTENSIONS[fmt])
    path = comfy_server.output_path(saved["subfolder"], saved["filename"])
    assert read_video_frames(path).shape == (4, 64, 64, 3)
    assert read_video_metadata(path) == {"prompt": json.loads(json.dumps(graph)), "workflow": WORKFLOW}
    if fmt == "webp":
        assert previews == []
    else:
        (preview,) = previews
        assert preview["type"] == "temp" and preview["filename"].endswith(".gif")
        gif = tmp_path / preview["filename"]
        gif.write_bytes(comfy_server.view(preview))
        assert read_video_frames(str(gif)).shape == (4, 64, 64, 3)


def test_a_prefix_outside_the_output_folder_is_refused(comfy_server):
    with pytest.raises(Exception, match="[Ss]aving image outside the output folder"):
        graph = save_video_graph("refused")
        graph["video"]["inputs"]["filename_prefix"] = "../../escaped"
        comfy_server.run(graph)
    assert not [name for name in os.listdir(os.path.dirname(comfy_server.base)) if name.startswith("escaped")]


def core_video_nodes(server):
    info = server.get("/object_info")
    missing = {"CreateVideo", "SaveVideo", "GetVideoComponents"} - set(info)
    if missing:
        pytest.skip(f"this ComfyUI has no VIDEO type: no {', '.join(sorted(missing))}")
    return info


def test_core_save_video_takes_the_pack_frames(comfy_server):
    core_video_nodes(comfy_server)
    graph = etc_graph(frames=4, prefix="core_in", video=False)
    graph["create"] = {"class_type": "CreateVideo", "inputs": {"images": ["etc", 0], "fps": 8.0}}
    graph["core_save"] = {"class_type": "SaveVideo", "inputs": {"video": ["create", 0], "filename_prefix": "core/etc",
                                                               "format": "auto", "codec": "auto"}}
    (saved,) = comfy_server.run(graph, workflow=WORKFLOW)["core_save"]["images"]
    path = comfy_server.output_path(saved["subfolder"], saved["filename"])
    assert read_video_frames(path).shape == (4, 64, 64, 3)
    assert read_video_metadata(path)["workflow"] == WORKFLOW  # the pack's reader reads core's metadata too


def test_audio_is_cut_to_the_video_and_refused_for_webp(comfy_server, tmp_path):
    graph = save_video_graph("tone")
    graph["tone"] = {"class_type": "ETCVCUTTestTone", "inputs": {"seconds": 3.0, "sample_rate": 22050, "channels": 2}}
    graph["video"]["inputs"]["audio"] = ["tone", 0]
    rate, codec, seconds = audio_samples(comfy_server, comfy_server.run(graph)["video"]["images"][0], tmp_path)
    assert (rate, codec) == (8, "aac") and 0.45 < seconds < 0.7  # 4 frames at 8 fps: half a second
    graph["video"]["inputs"]["format"] = "webp"
    with pytest.raises(Exception, match="audio: WEBP has no audio track"):
        comfy_server.run(graph)


def test_pack_saver_takes_what_users_wire_into_video_savers(comfy_server, tmp_path):
    core_video_nodes(comfy_server)
    graph = etc_graph(frames=4, prefix="wired", video=False)
    graph["tone"] = {"class_type": "ETCVCUTTestTone", "inputs": {"seconds": 2.0, "sample_rate": 16000, "channels": 1}}
    graph["create"] = {"class_type": "CreateVideo", "inputs": {"images": ["etc", 0], "fps": 4.0, "audio": ["tone", 0]}}
    graph["parts"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["create", 0]}}
    graph["video"] = {"class_type": "ETCSaveVideo", "inputs": {"images": ["parts", 0], "audio": ["parts", 1],
                                                               "frame_rate": ["parts", 2], "filename_prefix": "wired",
                                                               "format": "vp9-webm", "crf": 30}}
    rate, codec, seconds = audio_samples(comfy_server, comfy_server.run(graph)["video"]["images"][0], tmp_path)
    assert (rate, codec) == (4, "opus") and 0.9 < seconds < 1.2  # the two-second tone cut to 4 frames at 4 fps
