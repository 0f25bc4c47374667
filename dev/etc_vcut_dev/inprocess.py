"""ComfyUI's executor in this process: validate_prompt + PromptExecutor, as main.py's worker does."""
import asyncio
import inspect
import os
import sys
import uuid

from etc_vcut_dev.comfy_host import PromptError, comfyui_path, make_instance


class _Server:
    """What PromptExecutor needs of the server: a client id and a message sink."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def __init__(self):
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def _await(value):
    return asyncio.run(value) if inspect.iscoroutine(value) else value


class InProcessComfy:
    def __init__(self, base: str):
        root = comfyui_path()
        if root not in sys.path:
            sys.path.insert(0, root)
        config = make_instance(base)
        from comfy.cli_args import args
        args.cpu = True  # must be set before model_management is imported
        import folder_paths
        import nodes
        import execution
        import yaml
        with open(config) as f:
            entry = yaml.safe_load(f)["etcvcut"]
        # An earlier instance in this process may have had its folders deleted (pytest's tmp_path of a passed
        # test); the custom-node loader would fail listing them.
        paths, extensions = folder_paths.folder_names_and_paths["custom_nodes"]
        folder_paths.folder_names_and_paths["custom_nodes"] = ([p for p in paths if os.path.isdir(p)], extensions)
        for key, sub in entry.items():
            if key != "base_path":
                folder_paths.add_model_folder_path(key, os.path.join(base, sub))
        folder_paths.set_output_directory(os.path.join(base, "output"))
        folder_paths.set_input_directory(os.path.join(base, "input"))
        if hasattr(nodes, "init_extra_nodes"):
            _await(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        else:
            nodes.init_custom_nodes()
        self.nodes, self.execution = nodes, execution
        self.server = _Server()
        params = inspect.signature(execution.PromptExecutor).parameters
        self.executor = execution.PromptExecutor(self.server, **({"cache_args": {"lru": 0, "ram": 0}}
                                                               if "cache_args" in params else {}))
        self.base = base

    def validate(self, prompt: dict, prompt_id: str):
        params = inspect.signature(self.execution.validate_prompt).parameters
        if "prompt_id" in params:
            return _await(self.execution.validate_prompt(prompt_id, prompt, None))
        return self.execution.validate_prompt(prompt)

    def run(self, prompt: dict) -> dict:
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = self.validate(prompt, prompt_id)[:4]
        if not valid:
            raise PromptError(f"invalid prompt: {error} {node_errors}")
        self.executor.execute(prompt, prompt_id, {}, outputs)
        if not self.executor.success:
            errors = [m for m in self.server.messages if m[0] == "execution_error"]
            raise PromptError(f"execution failed: {errors[-1:]}")
        if hasattr(self.executor, "history_result"):
            return self.executor.history_result["outputs"]
        return self.executor.outputs_ui

    def output_path(self, *parts) -> str:
        return os.path.join(self.base, "output", *parts)
