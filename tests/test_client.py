"""scripts/queue_workflow.py against the real server: success, server down, invalid graph."""
import json
import os


from etc_vcut_dev import client as queue_workflow
from etc_vcut_dev.comfy_host import free_port
from etc_vcut_dev.graphs import svd_graph


def _write(tmp_path, prompt):
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(prompt))
    return str(path)


def test_success_with_override(comfy_server, tmp_path, capsys):
    path = _write(tmp_path, svd_graph(prefix="client", steps=2))
    code = queue_workflow.main([path, "--server", comfy_server.url, "--set", "sample.seed=11",
                                "--set", "save.prefix=client_seed11"])
    assert code == queue_workflow.EXIT_OK
    assert os.path.exists(comfy_server.output_path("client_seed11.safetensors"))
    assert "save" in json.loads(capsys.readouterr().out)


def test_server_down(tmp_path, capsys):
    code = queue_workflow.main([_write(tmp_path, svd_graph()), "--server", f"http://127.0.0.1:{free_port()}"])
    assert code == queue_workflow.EXIT_DOWN
    assert "cannot reach ComfyUI" in capsys.readouterr().err


def test_invalid_graph_is_rejected(comfy_server, tmp_path, capsys):
    prompt = svd_graph()
    prompt["sample"]["class_type"] = "NoSuchSampler"
    code = queue_workflow.main([_write(tmp_path, prompt), "--server", comfy_server.url])
    assert code == queue_workflow.EXIT_REJECTED
    err = capsys.readouterr().err
    assert "rejected" in err  # current ComfyUI names the node; the 2024 one answers a bare 500


def test_bad_override_names_the_nodes(tmp_path, capsys):
    code = queue_workflow.main([_write(tmp_path, svd_graph()), "--set", "99.seed=1"])
    assert code == queue_workflow.EXIT_USAGE
    assert "has no node '99'" in capsys.readouterr().err
