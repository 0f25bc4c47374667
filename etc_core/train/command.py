"""``python -m etc_core.train --config FILE [--resume]`` (also what ``accelerate launch -m`` runs): one run of
:class:`~etc_core.train.trainer.Trainer` from a config file, stopped cleanly by SIGTERM or Ctrl-C (a checkpoint
is written; ``--resume`` continues from it). Exit codes: 0 done (the export folder on stdout), 1 our
failure, 2 refused input, 3 stopped by a signal."""
import argparse
import signal
import sys
import traceback

from .config import TrainConfig
from .run_folder import checkpoints
from .trainer import Trainer


def one_line(error: BaseException) -> str:
    """The error as the node shows it: our own checks speak for themselves, others get their type."""
    text = " ".join(str(error).split())
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etc_core.train", description="ETC fine-tuning (section 4.2, appendix E.2)")
    parser.add_argument("--config", required=True, help="JSON file with the TrainConfig fields")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--config-sha256", help="refuse the config unless its file has this digest (the launch "
                        "line written with the config passes it)")
    args = parser.parse_args(argv)
    stop = []
    # SIGTERM / Ctrl-C: finish the step, write a checkpoint, exit; --resume continues from it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    try:
        trainer = Trainer(TrainConfig.from_file(args.config, args.config_sha256), resume=args.resume)
        trainer.train(progress=lambda s, n, loss: print(f"step {s}/{n} loss {loss:.6f}", file=sys.stderr,
                                                        flush=True),
                      should_stop=lambda: bool(stop))
        if trainer.step < trainer.config.max_steps:  # stopped by a signal, here or on another rank
            newest = checkpoints(trainer.config.output_dir)[-1]
            print(f"stopped at step {trainer.step}; checkpoint {newest}", file=sys.stderr)
            return 3
        folder = trainer.export()
    except (ValueError, OSError) as e:  # refused input: the message is the whole story
        print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
        return 2
    except Exception as e:  # a failure of ours: keep the traceback in the log, the node shows the last line
        traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
        return 1
    if trainer.accelerator.is_main_process:
        print(folder)
    return 0

