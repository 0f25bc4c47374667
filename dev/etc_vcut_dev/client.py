#!/usr/bin/env python3
"""Queue an API-format workflow on a running ComfyUI and wait for its outputs.

    python scripts/queue_workflow.py workflows/api/svd_vcut.json --server http://127.0.0.1:8188 \\
        --set 7.seed=5 --set 5.cutoff_step=10

Exit codes: 0 done, 2 server unreachable, 3 graph rejected, 4 execution failed, 5 timed out, 6 bad arguments.
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

EXIT_OK, EXIT_DOWN, EXIT_REJECTED, EXIT_FAILED, EXIT_TIMEOUT, EXIT_USAGE = 0, 2, 3, 4, 5, 6


class ClientError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def apply_overrides(prompt: dict, overrides) -> dict:
    """``NODE.INPUT=VALUE`` items; VALUE is parsed as JSON when it can be (numbers, true, lists)."""
    for item in overrides or ():
        target, sep, raw = item.partition("=")
        node, dot, name = target.partition(".")
        if not sep or not dot:
            raise ClientError(EXIT_USAGE, f"--set {item!r}: expected NODE.INPUT=VALUE, for example 7.seed=5")
        if node not in prompt:
            raise ClientError(EXIT_USAGE, f"--set {item!r}: the workflow has no node {node!r} "
                                          f"(nodes: {', '.join(sorted(prompt))})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        prompt[node]["inputs"][name] = value
    return prompt


def _request(server, path, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.rstrip("/") + path, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise ClientError(EXIT_REJECTED, f"ComfyUI rejected the workflow ({e.code}): {detail[:4000]}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        raise ClientError(EXIT_DOWN, f"cannot reach ComfyUI at {server}: {e}; is it running "
                                     "(python main.py --listen) and is --server right?") from None


def run(server: str, prompt: dict, timeout: float = 3600, progress=print) -> dict:
    """Queue ``prompt``, wait for it, return its outputs (node id -> ui outputs)."""
    prompt_id = _request(server, "/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})["prompt_id"]
    progress(f"queued {prompt_id}")
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        history = _request(server, f"/history/{prompt_id}")
        if prompt_id in history:
            entry = history[prompt_id]
            status = entry.get("status", {})
            if status.get("status_str") == "error":
                errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
                detail = errors[0] if errors else status
                raise ClientError(EXIT_FAILED, f"execution failed: {json.dumps(detail)[:4000]}")
            return entry["outputs"]
        queue = _request(server, "/queue")
        running = any(item[1] == prompt_id for item in queue.get("queue_running", []))
        state = "running" if running else f"waiting ({len(queue.get('queue_pending', []))} pending)"
        if state != last:
            progress(state)
            last = state
        time.sleep(0.5)
    raise ClientError(EXIT_TIMEOUT, f"prompt {prompt_id} did not finish within {timeout}s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", help="API-format workflow JSON (ComfyUI: Workflow > Export (API))")
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--set", dest="overrides", action="append", metavar="NODE.INPUT=VALUE")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    try:
        try:
            with open(args.workflow) as f:
                prompt = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ClientError(EXIT_USAGE, f"cannot read workflow {args.workflow}: {e}") from None
        outputs = run(args.server, apply_overrides(prompt, args.overrides), args.timeout,
                      progress=lambda m: print(m, file=sys.stderr))
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    print(json.dumps(outputs, indent=1))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
