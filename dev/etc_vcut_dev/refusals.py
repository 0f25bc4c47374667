"""Helpers for tests of refused prompts: the refusal as /history records it, folder checksums (nothing
changed) and the audio a saved file holds."""
import hashlib
import json
import os
import time


def tree_digest(*folders) -> dict:
    """{path: sha256 of the file, or the link target, or 'dir'} for everything under ``folders``."""
    found = {}
    for folder in folders:
        found[str(folder)] = "dir" if os.path.isdir(folder) else None
        for parent, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(parent, name)
                if os.path.islink(path):
                    found[path] = "link:" + os.readlink(path)
                elif os.path.isdir(path):
                    found[path] = "dir"
                else:
                    with open(path, "rb") as f:
                        found[path] = hashlib.sha256(f.read()).hexdigest()
    return found


def refusal(server, prompt: dict, timeout: float = 300):
    """``(exception message, whole /history entry as text)`` of a prompt that must fail while executing."""
    prompt_id = server.queue(prompt)
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = server.get(f"/history/{prompt_id}")
        if prompt_id in history:
            entry = history[prompt_id]
            errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
            assert errors, f"the prompt did not fail: {json.dumps(entry)[:2000]}"
            return errors[0]["exception_message"].strip(), json.dumps(entry)  # newer ComfyUI appends "\n"
        time.sleep(0.25)
    raise TimeoutError(prompt_id)


def audio_samples(server, entry, tmp_path):
    """(video frame rate, audio codec, decoded audio seconds) of a saved file."""
    import av
    path = tmp_path / entry["filename"]
    path.write_bytes(server.view(entry))
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio=0))
        return container.streams.video[0].average_rate, stream.codec_context.name, samples / stream.rate
