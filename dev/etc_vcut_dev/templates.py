"""The example workflows as ComfyUI's template browser shows them: a Note saying what to get first, the
published models of each loader in ``properties.models`` (the current frontend's missing-models dialog
offers their download), a title for a name and a thumbnail of what the graph makes.

workflows/api/<name>.json is the source; :func:`ui_template` gives workflows/ui/<name>.json, and
example_workflows/<title>.json is a byte copy of it (the browser titles a pack's template by its file name).
``python scripts/make_templates.py`` writes both and the thumbnails.
"""
import json
import os

from .workflow_format import api_to_ui

HF = "https://huggingface.co/"
# Published files: the URL the frontend downloads from (gated repositories need the licence accepted first).
PUBLISHED = {
    "svd.safetensors": HF + "stabilityai/stable-video-diffusion-img2vid/resolve/main/svd.safetensors",
    "svd_xt.safetensors": HF + "stabilityai/stable-video-diffusion-img2vid-xt/resolve/main/svd_xt.safetensors",
    "sv3d_u.safetensors": HF + "stabilityai/sv3d/resolve/main/sv3d_u.safetensors",
    "sv3d_p.safetensors": HF + "stabilityai/sv3d/resolve/main/sv3d_p.safetensors",
    "stable_zero123.ckpt": HF + "stabilityai/stable-zero123/resolve/main/stable_zero123.ckpt",
    "v2-1_512-ema-pruned.safetensors": HF + "stabilityai/stable-diffusion-2-1-base/resolve/main/"
                                            "v2-1_512-ema-pruned.safetensors",
}
# (node, input) that names a model file -> the current frontend's model folder for it.
MODEL_INPUTS = {("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
                ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
                ("UNETLoader", "unet_name"): "diffusion_models", ("CLIPLoader", "clip_name"): "text_encoders",
                ("VAELoader", "vae_name"): "vae", ("ETCSampler", "fps_weights"): "etc",
                ("ETCTrainer", "pretrained"): "checkpoints"}
NOT_FILES = {"none", "untrained (zero init, no-op)"}  # fps_weights choices that load nothing

SD21 = ("v2-1_512-ema-pruned.safetensors (SD 2.1 base) from https://huggingface.co/stabilityai/"
        "stable-diffusion-2-1-base into ComfyUI/models/checkpoints/")
OWN_EXPORT = ("No ETC weights are published: you train your own (template 'ETC training (short run)', or "
              "etc_core.train from a terminal). A run writes output/etc_runs/<run>/final/etc_unet_comfyui.safetensors "
              "(copy it to ComfyUI/models/unet/) and final/etc_fps.safetensors (copy it to ComfyUI/models/etc/).")
VCUT = ("VCUT Patch SVD serves the model's one-token cross-attentions from a cached exact projection (and drops "
        "the temporal ones where tca_mode is drop); VCUT Guidance Cutoff runs classifier-free guidance only in the "
        "first cutoff_step steps.")
IMAGE = "Pick your image in Load Image (example.png is a placeholder: upload yours there)."
GATED = "(if the page asks you to log in and accept the licence, do so and download it in your browser)"

DEMO_MODEL = ("1. This graph samples the tiny ETC model that the pack's first command trains (.venv/bin/python "
              "scripts/demo.py). Copy its four files from demo_output/comfy/models/ into your ComfyUI: "
              "unet/etc_demo_unet.safetensors -> models/unet/, clip/etc_demo_text_encoder.safetensors -> "
              "models/clip/, vae/etc_demo_taesd.safetensors -> models/vae/, etc/etc_demo_fps.safetensors -> "
              "models/etc/.")
OWN_MODEL = ("Your own model: " + OWN_EXPORT + " Load it as in the template 'ETC text to video' (its Note says "
             "how) and set frames, layout and frame size to those you trained.")


def _grid_task_note(inputs: str, makes: str) -> str:
    """The Note of a grid-task template: the demo's model, what to feed it, what Run makes, your own model."""
    return "\n".join([DEMO_MODEL, f"2. {inputs}", f"3. Run: {makes}.", "", OWN_MODEL])


# name (workflows/ui/<name>.json) -> (title = example_workflows file name, Note text)
TEMPLATES = {
    "svd_vcut": ("SVD image to video with VCUT", "\n".join([
        f"1. Download svd_xt.safetensors (SVD-XT) from https://huggingface.co/stabilityai/"
        f"stable-video-diffusion-img2vid-xt into ComfyUI/models/checkpoints/ {GATED}. SVD (14-frame model): "
        "svd.safetensors from https://huggingface.co/stabilityai/stable-video-diffusion-img2vid, same folder; "
        "pick it in Image Only Checkpoint Loader.",
        f"2. {IMAGE}",
        "3. Run: 14 frames of 1024x576 at 6 fps -> output/SVD/vcut_*.mp4.",
        "", VCUT, "Compare with the template 'SVD image to video (baseline)' (same graph without VCUT)."])),
    "svd_baseline": ("SVD image to video (baseline)", "\n".join([
        f"1. Download svd_xt.safetensors (SVD-XT) from https://huggingface.co/stabilityai/"
        f"stable-video-diffusion-img2vid-xt into ComfyUI/models/checkpoints/ {GATED}. SVD: svd.safetensors "
        "from https://huggingface.co/stabilityai/stable-video-diffusion-img2vid works the same.",
        f"2. {IMAGE}",
        "3. Run: 14 frames of 1024x576 at 6 fps -> output/SVD/baseline_*.mp4.",
        "", "Plain SVD, for comparison with 'SVD image to video with VCUT' (same seed, same settings)."])),
    "sv3d_vcut": ("SV3D orbit video with VCUT", "\n".join([
        f"1. Download sv3d_p.safetensors from https://huggingface.co/stabilityai/sv3d into "
        f"ComfyUI/models/checkpoints/ {GATED}. sv3d_u.safetensors (same page, no camera input) runs the same "
        "graph; pick it in the loader.",
        f"2. {IMAGE} One object, centred, on a plain background, square.",
        "3. Run: 21 views of 576x576 orbiting the object at elevation 10 -> output/SV3D/vcut_*.mp4.",
        "", VCUT])),
    "zero123_vcut": ("Stable Zero123 turntable with VCUT", "\n".join([
        f"1. Download stable_zero123.ckpt from https://huggingface.co/stabilityai/stable-zero123 into "
        f"ComfyUI/models/checkpoints/ {GATED}.",
        f"2. {IMAGE} One object, centred, on a plain background, square.",
        "3. Run: 8 views of 256x256, 45 degrees apart -> output/Zero123/vcut_turntable_*.mp4.",
        "", VCUT])),
    "etc_text_to_video": ("ETC text to video", "\n".join([
        "This graph samples the tiny ETC model that the pack's first command trains (.venv/bin/python "
        "scripts/demo.py: coloured squares moving on a light grey background, trained in minutes on a CPU). It "
        "writes "
        "the four files below into demo_output/comfy/models/; copy them into your ComfyUI:",
        "  unet/etc_demo_unet.safetensors -> ComfyUI/models/unet/",
        "  clip/etc_demo_text_encoder.safetensors -> ComfyUI/models/clip/",
        "  vae/etc_demo_taesd.safetensors -> ComfyUI/models/vae/",
        "  etc/etc_demo_fps.safetensors -> ComfyUI/models/etc/",
        "Run: 8 frames of 32x32 (saved 4x larger) in one 2x4 grid at 4 fps -> output/ETC/t2v_*.mp4. It knows "
        "'a <red|green|blue|yellow> square moving <left|right|up|down>'.",
        "",
        "Your own model: " + OWN_EXPORT + " Pick those two files in Load Diffusion Model and in the sampler's "
        "fps_weights; replace the CLIP and VAE loaders by Load Checkpoint of the base you fine-tuned (e.g. "
        "v2-1_512-ema-pruned.safetensors: its CLIP and VAE outputs); set ModelSamplingDiscrete to eps for the "
        "512 base (v_prediction for a 768-v base; the demo's base is v); set frames, layout and frame size to "
        "those you trained."])),
    "etc_long_video": ("ETC long video (256 frames)", "\n".join([
        f"1. Download {SD21} (its text encoder and VAE are used here).",
        "2. " + OWN_EXPORT + " Or pick your files' names in Load Diffusion Model and in the sampler's fps_weights.",
        "3. Run: 256 frames of 256x160 in one 16x16 grid (a 4096x2560 image: a large GPU; fewer frames and a "
        "smaller layout for less) -> output/ETC/long_*.mp4.",
        "", "For the tiny model of the first command use the template 'ETC text to video'."])),
    "etc_image_to_video": ("ETC image to video", _grid_task_note(
        "Pick your first frame in Load Image (example.png is a placeholder): for the demo's model a 32x32 frame "
        "of one coloured square on light grey, as its training clips. ETC Keyframes encodes it into frame 0's "
        "grid cell and keeps it (noise mask); ETC Sampler generates frames 1-7 around it.",
        "8 frames of 32x32 in one 2x4 grid at 4 fps -> output/ETC/i2v_*.mp4")),
    "etc_keyframe_interpolation": ("ETC keyframe interpolation", _grid_task_note(
        "Pick the first and the last frame in the two Load Image nodes (frame_numbers '0, 7': the first image "
        "is frame 0, the second frame 7). The frames between are generated.",
        "8 frames of 32x32 in one 2x4 grid at 4 fps -> output/ETC/keyframes_*.mp4")),
    "etc_video_to_video": ("ETC video to video", _grid_task_note(
        "Put the source clip in ComfyUI/input/ as ONE grid image of 2x4 frames in reading order (e.g. saved "
        "from ETC Grid Pack (image)) and pick it in Load Image. denoise 0.6 keeps the motion and layout; lower "
        "keeps more of the source, higher follows the prompt more.",
        "8 frames of 32x32 at 4 fps -> output/ETC/v2v_*.mp4")),
    "etc_per_frame_prompts": ("ETC per-frame prompts", _grid_task_note(
        "Frames 0-3 follow the first ETC Per-Frame Conditioning's prompt, frames 4-7 the second's; a frame in "
        "no range follows the global prompt. Chain one node per range; a frame takes one range.",
        "8 frames of 32x32 in one 2x4 grid at 4 fps -> output/ETC/per_frame_*.mp4")),
    "etc_training_launch": ("ETC training (short run)", "\n".join([
        "Fine-tunes SD 2.1 into ETC inside ComfyUI. The default is a short first run (300 steps, a checkpoint "
        "every 100) to check data and setup; the paper trains for about 15000 steps: raise max_steps and set "
        "resume to continue this run.",
        f"1. Download {SD21}.",
        "2. Data: video clips with a same-name .txt caption each (clip1.mp4 + clip1.txt) in "
        "ComfyUI/input/etc_data/clips/ (video_manifest). Optional: captioned stills (a.png + a.txt) in a folder "
        "under input/ as image_manifest, and a folder of <label>/ image folders as label_folder. Paths are "
        "relative to ComfyUI/input/ (or models/); a JSONL manifest works too.",
        "3. Run: progress bar and loss curve on the node; checkpoints and the export go to "
        "ComfyUI/output/etc_runs/first_run/ (final/etc_unet_comfyui.safetensors -> models/unet/, "
        "final/etc_fps.safetensors -> models/etc/ for the ETC templates). Cancel stops at the next step with a "
        "checkpoint.",
        "mixed_precision bf16 needs a GPU or CPU with bf16; pick no otherwise."])),
}
NOTE_SIZE = (440, 520)


def model_files(node: dict) -> list:
    """(file, model folder) for each model file an API node names."""
    return [(value, MODEL_INPUTS[node["class_type"], name]) for name, value in node["inputs"].items()
            if (node["class_type"], name) in MODEL_INPUTS and isinstance(value, str) and value not in NOT_FILES]


def models(node: dict) -> list:
    """``properties.models`` for an API node: its published model files with folder and URL. The current
    frontend's workflow schema requires a URL on every entry (it rejects the workflow with an alert
    otherwise), so the ETC files, which nobody publishes, are named by the Note only."""
    return [{"name": name, "url": PUBLISHED[name], "directory": folder}
            for name, folder in model_files(node) if name in PUBLISHED]


def ui_template(name: str, prompt: dict, object_info: dict) -> dict:
    """The UI workflow of an API one, with ``properties.models`` on its loaders and the template's Note."""
    ui = api_to_ui(prompt, object_info)
    for api_node, node in zip(prompt.values(), ui["nodes"]):  # api_to_ui numbers the nodes in prompt order
        if models(api_node):
            node["properties"]["models"] = models(api_node)
    title, text = TEMPLATES[name]
    note_id = ui["last_node_id"] = ui["last_node_id"] + 1
    ui["nodes"].append({"id": note_id, "type": "Note", "pos": [-NOTE_SIZE[0] - 10, 50], "size": list(NOTE_SIZE),
                        "flags": {}, "order": len(ui["nodes"]), "mode": 0, "inputs": [], "outputs": [],
                        "title": f"Read me first: {title}", "properties": {"text": ""}, "widgets_values": [text],
                        "color": "#432", "bgcolor": "#653"})
    # Opened at full size with the Note top left, clear of the current frontend's side bar and menus: a fitted
    # view of a wide graph falls below the zoom at which the frontend draws text (the 2024 one ignores ds).
    ui["extra"]["ds"] = {"scale": 1.0, "offset": [NOTE_SIZE[0] + 10 + 80, 90]}
    return ui


def write(repo: str, name: str, ui: dict):
    """workflows/ui/<name>.json and its copy example_workflows/<title>.json."""
    text = json.dumps(ui, indent=1)
    for path in (os.path.join(repo, "workflows", "ui", name + ".json"),
                 os.path.join(repo, "example_workflows", TEMPLATES[name][0] + ".json")):
        with open(path, "w") as f:
            f.write(text)
