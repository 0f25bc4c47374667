"""API-format test graphs (what scripts queue over POST /prompt)."""


def svd_graph(*, color=0x3366CC, frames=4, size=64, steps=6, cfg=2.5, seed=7, vcut=None, cutoff=None,
              count_file=None, prefix="svd", sampler="euler", scheduler="karras", loader=None):
    """Tiny SVD image-to-video; ``vcut=(sca, tca)`` and ``cutoff=c`` add the VCUT nodes.

    ``loader`` replaces the tiny-SVD loader node. Its id is derived from its class, since the
    early-2024 executor reuses a cached node output when the id and inputs match.
    """
    loader = loader or {"class_type": "ETCVCUTTestTinySVD", "inputs": {"seed": 0}}
    load = "load_" + loader["class_type"]
    g = {
        "img": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                        "color": color}},
        "cond": {"class_type": "SVD_img2vid_Conditioning", "inputs": {
            "clip_vision": [load, 1], "init_image": ["img", 0], "vae": [load, 2], "width": size,
            "height": size, "video_frames": frames, "motion_bucket_id": 127, "fps": 6,
            "augmentation_level": 0.0}},
        "lincfg": {"class_type": "VideoLinearCFGGuidance", "inputs": {"model": [load, 0], "min_cfg": 1.0}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["lincfg", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["cond", 0], "negative": ["cond", 1],
            "latent_image": ["cond", 2], "denoise": 1.0}},
        "save": {"class_type": "ETCVCUTTestSaveTensors", "inputs": {"prefix": prefix, "latent": ["sample", 0]}},
    }
    g[load] = loader
    model = [load, 0]
    if count_file:
        g["count"] = {"class_type": "ETCVCUTTestCountPasses", "inputs": {"model": model, "filename": count_file}}
        model = ["count", 0]
    if vcut:
        g["vcut"] = {"class_type": "VCUTPatchSVD", "inputs": {"model": model, "sca_mode": vcut[0],
                                                               "tca_mode": vcut[1]}}
        model = ["vcut", 0]
    if cutoff is not None:
        g["cutoff"] = {"class_type": "VCUTGuidanceCutoff", "inputs": {"model": model, "cutoff_step": cutoff}}
        model = ["cutoff", 0]
    g["lincfg"]["inputs"]["model"] = model
    return g
