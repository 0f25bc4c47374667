"""Training state as safetensors and JSON, so resuming a run never unpickles a file.

A run folder lies under ComfyUI's output/, which anyone who reaches the server can write to
(``/upload/image?type=output``): a checkpoint is read as tensors and JSON only, never as a pickle.
DeepSpeed runs (terminal only) keep DeepSpeed's own format; see ``etc_core.train``.

Files of ``checkpoint-N/``: ``model.safetensors`` (the unwrapped model), ``optimizer.safetensors`` (its
per-parameter state tensors; the param groups go to ``trainer_state.json``), ``rng_<rank>.safetensors``
(each process's torch RNG states) and ``trainer_state.json``.
"""
import os

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

MODEL, OPTIMIZER = "model.safetensors", "optimizer.safetensors"


def rng_file(rank: int) -> str:
    return f"rng_{rank}.safetensors"


def optimizer_tensors(state_dict: dict):
    """``({"<param index>.<key>": tensor}, param_groups)`` of a torch optimizer's ``state_dict()``."""
    tensors = {f"{index}.{key}": value.detach().contiguous().cpu()
               for index, state in state_dict["state"].items() for key, value in state.items()}
    return tensors, state_dict["param_groups"]


def optimizer_state(tensors: dict, groups: list) -> dict:
    """The inverse of :func:`optimizer_tensors` (JSON turned the betas tuples into lists)."""
    state = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [dict(group, betas=tuple(group["betas"])) if "betas" in group else group for group in groups]
    return {"state": state, "param_groups": groups}


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict):
    torch.set_rng_state(state["cpu"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_state(folder: str, model, optimizer, scheduler, scaler, rank: int, is_main: bool) -> dict:
    """Write this process's share of the state into ``folder``; returns what goes into trainer_state.json
    (on the main process, the model and optimizer files too: data-parallel ranks hold the same ones)."""
    os.makedirs(folder, exist_ok=True)
    save_file(rng_state(), os.path.join(folder, rng_file(rank)))
    if not is_main:
        return {}
    save_model(model, os.path.join(folder, MODEL))
    tensors, groups = optimizer_tensors(optimizer.state_dict())
    save_file(tensors, os.path.join(folder, OPTIMIZER))
    return {"optimizer_groups": groups, "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None}


def damaged(folder: str, name: str) -> ValueError:
    """The error for a checkpoint file that does not read back: the file (relative to the run folder,
    never the server's path) and the fix."""
    where = f"{os.path.basename(folder)}/{name}"
    return ValueError(f"checkpoint {where} in output_dir is damaged (it does not read back); delete the folder "
                      f"{os.path.basename(folder)} to resume from the checkpoint before it, or start a new output_dir")


def read_file(folder: str, name: str, read):
    try:
        return read(os.path.join(folder, name))
    except Exception:  # safetensors and torch report a damaged file in several exception types
        raise damaged(folder, name) from None


def load_state(folder: str, state: dict, model, optimizer, scheduler, scaler, rank: int, device):
    """Restore what :func:`save_state` wrote (``state``: the parsed trainer_state.json)."""
    names = [MODEL, OPTIMIZER, rng_file(rank)]
    absent = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
    if absent or "optimizer_groups" not in state:
        raise ValueError(f"{os.path.basename(folder)} in output_dir is not a checkpoint of this trainer (no "
                         f"{', '.join(absent) or 'optimizer state'}); resume a run that this version of the pack "
                         "wrote, or start a new output_dir")
    device = "cpu" if torch.device(device).type == "cpu" else str(device)  # safetensors refuses "cpu:0"
    read_file(folder, MODEL, lambda path: load_model(model, path, device=device))
    tensors = read_file(folder, OPTIMIZER, lambda path: load_file(path, device=device))
    optimizer.load_state_dict(optimizer_state(tensors, state["optimizer_groups"]))
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(read_file(folder, rng_file(rank), load_file))
