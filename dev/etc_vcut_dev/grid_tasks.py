"""API graphs of ETC's grid tasks (keyframes, video-to-video, per-frame prompts, guidance cutoff), for the tests
on the tiny random SD 2.x fixture and the measurements on the demo's trained ETC."""
from .graphs import add_fixture_patches

TINY_SD2 = {"load": {"class_type": "ETCVCUTTestTinySD2", "inputs": {"seed": 0}}}
TINY_REFS = (["load", 0], ["load", 1], ["load", 2])


def color_images(g: dict, name: str, colors, size: int) -> list:
    """Adds plain-colour images (one per colour, ``size`` square) batched in order; returns the IMAGE output."""
    refs = []
    for k, color in enumerate(colors):
        g[f"{name}{k}"] = {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                                  "color": color}}
        refs.append([f"{name}{k}", 0])
    while len(refs) > 1:
        g[f"{name}_batch{len(refs)}"] = {"class_type": "ImageBatch", "inputs": {"image1": refs[0], "image2": refs[1]}}
        refs = [[f"{name}_batch{len(refs)}", 0]] + refs[2:]
    return refs[0]


def grid_task_graph(*, prefix, frames=4, layout="2x2", size=64, steps=3, seed=1, cfg=5.0, sampler="euler",
                    scheduler="normal", text="a red ball bouncing", negative="", batch=1, keyframes=None, source=None,
                    denoise=1.0, frame_prompts=(), stock=False, cutoff=None, count_file=None, low_memory=False,
                    models=None, fps=8, fps_weights="none"):
    """One ETC grid task. ``keyframes=(frame_numbers, IMAGE ref)`` adds ETC Keyframes; ``source`` (IMAGE ref
    of ``frames`` frames) packs a clip for video-to-video at ``denoise``; ``frame_prompts=[(ranges, text)]``
    chains ETC Per-Frame Conditioning on the prompt ``text``; ``cutoff`` adds VCUT Guidance Cutoff.
    ``stock``: the stock KSampler through ETC Mixed Embedding instead of ETC Sampler. ``models``:
    ``(nodes, model ref, clip ref, vae ref)``, default the tiny SD 2.x fixture. Saves the grid latent (and,
    with ETC Sampler, the frames) to output/<prefix>.safetensors."""
    nodes, model, clip, vae = models or (TINY_SD2, *TINY_REFS)
    g = {key: dict(value) for key, value in nodes.items()}
    g["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": text}}
    g["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": negative}}
    positive, latent = ["pos", 0], None
    grid = {"frames": frames, "layout": layout}
    if source is not None:
        g["src_enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": source, "vae": vae}}
        g["src_pack"] = {"class_type": "ETCGridPackLatent", "inputs": {"latent": ["src_enc", 0], **grid}}
        latent = ["src_pack", 0]
    if keyframes is not None:
        g["keys"] = {"class_type": "ETCKeyframes", "inputs": {
            "vae": vae, "images": keyframes[1], "frame_numbers": keyframes[0], **grid, "frame_width": size,
            "frame_height": size, "batch_size": batch, **({"latent": latent} if latent else {})}}
        latent = ["keys", 0]
    if latent is None and (frame_prompts or stock):
        g["empty"] = {"class_type": "ETCEmptyGridLatent", "inputs": {**grid, "frame_width": size,
                                                                      "frame_height": size, "batch_size": batch}}
        latent = ["empty", 0]
    for k, (ranges, frame_text) in enumerate(frame_prompts):
        g[f"fp_text{k}"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": frame_text}}
        g[f"fp{k}"] = {"class_type": "ETCPerFrameConditioning", "inputs": {
            "conditioning": positive, "frame_conditioning": [f"fp_text{k}", 0], "frame_ranges": ranges, **grid,
            "latent": latent}}
        positive = [f"fp{k}", 0]
    model = add_fixture_patches(g, model, low_memory, count_file)
    if cutoff is not None:
        g["cutoff"] = {"class_type": "VCUTGuidanceCutoff", "inputs": {"model": model, "cutoff_step": cutoff}}
        model = ["cutoff", 0]
    common = {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
              "positive": positive, "negative": ["neg", 0]}
    if stock:
        g["me"] = {"class_type": "ETCMixedEmbedding", "inputs": {"model": model, **grid, "theta": 10000.0,
                                                                 "strength": 1.0, "latent": latent}}
        g["sample"] = {"class_type": "KSampler", "inputs": {"model": ["me", 0], **common, "latent_image": latent,
                                                            "denoise": denoise}}
        g["save"] = {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix, "latent": ["sample", 0]}}
        return g
    g["sample"] = {"class_type": "ETCSampler", "inputs": {
        "model": model, **common, "vae": vae, **grid, "frame_width": size, "frame_height": size, "batch_size": batch,
        "theta": 10000.0, "me_strength": 1.0, "fps": fps, "fps_weights": fps_weights, "denoise": denoise,
        **({"latent": latent} if latent else {})}}
    g["save"] = {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix, "latent": ["sample", 1],
                                                                    "image": ["sample", 0]}}
    return g


def _frame_size(*nodes, size=64):
    return [f"{node}.{key}={size}" for node in nodes for key in ("frame_width", "frame_height")]


# The grid-task workflows of workflows/api sized for the tiny random models (tests/test_workflows.py).
GRID_TASK_OVERRIDES = {  # their ETCSampler loads no FPS file (the tiny fixture has none)
    "etc_image_to_video.json": ["5.width=64", "5.height=64", "7.fps_weights=none"] + _frame_size("6", "7"),
    "etc_keyframe_interpolation.json": ["5.width=64", "5.height=64", "7.width=64", "7.height=64",
                                        "10.fps_weights=none"] + _frame_size("9", "10"),
    "etc_video_to_video.json": ["5.width=256", "5.height=128", "9.fps_weights=none"] + _frame_size("9"),
    "etc_per_frame_prompts.json": ["9.fps_weights=none"] + _frame_size("4", "9"),
}
