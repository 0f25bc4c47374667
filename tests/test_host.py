"""The pack inside real ComfyUI: loaded by its own loader, listed by /object_info, runs in-process too."""
import torch
from safetensors.torch import load_file

from etc_vcut_dev.graphs import svd_graph



def test_every_node_is_listed_by_object_info_with_declared_types(comfy_server):
    info = comfy_server.get("/object_info")
    names = ["VCUTPatchSVD", "VCUTGuidanceCutoff", "ETCEmptyGridLatent", "ETCGridPackLatent", "ETCGridUnpackLatent",
             "ETCGridPackImage", "ETCGridUnpackImage", "ETCMixedEmbedding", "ETCFPSConditioning", "ETCSampler",
             "ETCSaveVideo", "ETCVideoFilter", "ETCTrainer", "ETCTrainCommand", "ETCKeyframes",
             "ETCPerFrameConditioning"]
    for name in names:
        assert name in info, f"{name} missing from /object_info"
        entry = info[name]
        assert entry["category"] in ("video/ETC", "video/VCUT")
    assert info["VCUTPatchSVD"]["output"] == ["MODEL"]
    assert info["VCUTPatchSVD"]["input"]["required"]["sca_mode"][0] == ["linear", "keep"]
    assert info["VCUTPatchSVD"]["input"]["required"]["tca_mode"][0] == ["drop", "linear", "keep"]
    assert info["VCUTGuidanceCutoff"]["input"]["required"]["cutoff_step"][0] == "INT"
    assert info["ETCSampler"]["output"] == ["IMAGE", "LATENT"]
    assert info["ETCSampler"]["output_name"] == ["frames", "grid_latent"]
    assert info["ETCSaveVideo"]["output_node"] is True
    assert info["ETCEmptyGridLatent"]["input"]["required"]["layout"][0] == "STRING"
    pack_nodes = {n for n, e in info.items() if e["category"].startswith("video/ETC") or
                  e["category"].startswith("video/VCUT")}
    assert pack_nodes == set(names)


def test_pack_loads_without_import_error(comfy_server):
    log = comfy_server.log()
    assert "comfyui-etc-vcut" in log  # ComfyUI's loader timed the pack's import
    for line in log.splitlines():
        if "IMPORT FAILED" in line or "Cannot import" in line:
            assert "comfyui-etc-vcut" not in line and "etc_vcut_test_fixtures" not in line, line


def test_in_process_executor_matches_server(comfy_server, tmp_path):
    """The same graph through ComfyUI's PromptExecutor in this process gives the server's latent."""
    from etc_vcut_dev.inprocess import InProcessComfy
    host = InProcessComfy(str(tmp_path))
    host.run(svd_graph(prefix="inproc", vcut=("linear", "drop"), cutoff=2))
    comfy_server.run(svd_graph(prefix="inproc", vcut=("linear", "drop"), cutoff=2))
    a = load_file(host.output_path("inproc.safetensors"))["latent"]
    b = load_file(comfy_server.output_path("inproc.safetensors"))["latent"]
    assert a.shape == (4, 4, 8, 8) and torch.equal(a, b)
