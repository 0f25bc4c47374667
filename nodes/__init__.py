"""ComfyUI adapters. Each module contributes NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS."""
from . import etc_data_nodes, etc_grid_task_nodes, etc_nodes, etc_train_nodes, vcut_nodes, video_nodes
from .input_checks import guard_float_inputs

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (etc_nodes, etc_grid_task_nodes, etc_data_nodes, etc_train_nodes, vcut_nodes, video_nodes):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
# Every FLOAT input of every pack node is refused when NaN or infinite (nodes/input_checks.py).
for _name, _node_class in NODE_CLASS_MAPPINGS.items():
    guard_float_inputs(_node_class, _name)
