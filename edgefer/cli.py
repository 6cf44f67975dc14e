"""The `edgefer` command line: one click group, heavy subcommands imported on demand.

Exit codes: 0 ok, 1 a check failed (e.g. the bench's --max-drop gate), 2 bad input. Errors
the user can act on are printed as one line on stderr, never as a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from .errors import EdgeferError
from .signals import Interrupted, signal_name

#: subcommand -> "module:attribute"; modules are imported only when the command is used, so
#: `edgefer run` never pays for torch, and `edgefer export` works only where its extra is installed.
COMMANDS = {
    "run": ("edgefer.commands.run:run", "Detect faces and classify emotions in a camera, video, image or folder."),
    "explain": ("edgefer.commands.explain:explain", "Heatmap of where the classifier looked, on each face of an image."),
    "analyze": ("edgefer.commands.analyze:analyze", "Analyze many videos into Parquet tables (local process pool, or Ray)."),
    "info": ("edgefer.commands.info:info", "Print and validate a model artifact."),
    "bench": ("edgefer.commands.bench:bench", "Measure FPS, latency and accuracy drop per backend x precision."),
    "export": ("edgefer.export.cli:export", "Export a model to an artifact for onnx / openvino / trt / coreml."),
    "ensemble": ("edgefer.commands.ensemble:ensemble", "Combine classifier artifacts into one ensemble artifact."),
    "calibrate": ("edgefer.calibration.cli:calibrate", "Collect calibration samples (face crops) into an .npz."),
    "train": ("edgefer.train.cli:train", "Train a zoo architecture on FER2013 / FERPlus / RAF-DB / folders."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        import functools

        from .extras import as_edgefer_error, extra_for, install_hint

        target, _ = COMMANDS[name]
        mod, attr = target.split(":")
        try:
            cmd = getattr(importlib.import_module(mod), attr)
        except ImportError as e:
            missing = getattr(e, "name", None) or str(e)
            extra = extra_for(missing, name) or {"export": "export", "train": "train", "calibrate": "export"}.get(name, "dev")
            msg = f"`edgefer {name}` needs {missing}, not installed here: {install_hint(extra)}"

            @click.command(name=name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
            def unavailable(**_):
                raise EdgeferError(msg)

            unavailable.help = COMMANDS[name][1] + f" (unavailable here: {msg})"
            return unavailable
        if cmd.callback is not None and not getattr(cmd.callback, "_edgefer_extras_guard", False):
            # commands import torch / onnx / openvino / coremltools / matplotlib lazily, deep inside;
            # a missing one becomes one line naming the extra that installs it, not a traceback
            inner = cmd.callback

            @functools.wraps(inner)
            def guarded(*args, **kwargs):
                try:
                    return inner(*args, **kwargs)
                except ModuleNotFoundError as e:
                    err = as_edgefer_error(e, name)
                    if err is None:  # not an optional dependency: a real bug, keep its traceback
                        raise
                    raise err from None

            guarded._edgefer_extras_guard = True
            cmd.callback = guarded
        return cmd

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgefer")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or status line; results and errors only.")
@click.pass_context
def cli(ctx, verbose, quiet):
    """edgefer: facial expression recognition on the edge.

    \b
    Examples:
      edgefer run --camera 0
      edgefer run video.mp4 --output annotated.mp4 --events faces.jsonl
      edgefer export mini-xception --target openvino --int8 --calib fer2013.csv
      edgefer bench --data publictest.npz
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    if verbose == 0:
        # OpenCV's own warnings ("can't open camera by index") would follow our one-line errors
        import cv2

        try:
            # silent, not ERROR: the GUI build's camera backends (obsensor) log "[ERROR] Camera index out
            # of range" before our own one-line error; -v brings OpenCV's lines back
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        except AttributeError:  # pragma: no cover - builds without the logging module
            pass


def main(argv=None) -> int:
    try:
        rc = cli.main(args=argv, prog_name="edgefer", standalone_mode=False)
    except EdgeferError as e:
        click.echo(f"edgefer: error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("edgefer: aborted", err=True)
        return 130
    except click.UsageError as e:
        # one line, like every other error: what was wrong, and where to read more
        where = e.ctx.command_path if e.ctx is not None else "edgefer"
        msg = " ".join(e.format_message().split())
        click.echo(f"edgefer: error: {msg} (see `{where} --help`)", err=True)
        return 2
    except click.ClickException as e:
        e.show()
        return 2 if e.exit_code not in (0, 1) else e.exit_code
    except KeyboardInterrupt:
        click.echo("edgefer: interrupted", err=True)
        return 130
    except Interrupted as e:  # a stop signal before any output existed (edgefer.signals)
        click.echo(f"edgefer: stopped by {signal_name(e.signum)}", err=True)
        return 128 + e.signum
    except BrokenPipeError:
        return 0
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
