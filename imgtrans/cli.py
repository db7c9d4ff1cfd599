"""The `imgtrans` command. Every MLproject entry point calls one of its subcommands.

    imgtrans pix2pix --dataset synthetic-facades --max-steps 200
    imgtrans pix2pix --help
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any, Sequence

from imgtrans import config as config_mod
from imgtrans.config import TrainConfig
from imgtrans.errors import ImgtransError
from imgtrans.models import MODELS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise ImgtransError(f"{message} (see `{self.prog} --help`)")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig]) -> None:
    types = config_mod.field_types(cls)
    for f in config_mod.fields(cls):
        tp = types[f.name]
        choices = config_mod.choices_of(tp)
        help_text = f.metadata.get("help", "")
        if choices:
            help_text += f" ({'|'.join(choices)})"
        names = [flag(f.name)] + ([f"--{f.name}"] if "_" in f.name else [])
        parser.add_argument(*names, dest=f.name, default=None, metavar="CHOICE" if choices else tp.__name__.upper(),
                            help=f"{help_text} [default: {f.default!r}]")


def config_from_args(cls: type[TrainConfig], args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """The config, and the values that differ from the defaults (what the user asked for)."""
    types = config_mod.field_types(cls)
    values = {}
    for f in config_mod.fields(cls):
        raw = getattr(args, f.name)
        values[f.name] = f.default if raw is None else config_mod.parse_value(f.name, types[f.name], raw)
    cfg = cls(**values)
    defaults = cls()
    explicit = {k: v for k, v in values.items() if v != getattr(defaults, k)}
    return cfg, explicit


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imgtrans", description="Image-to-image translation experiments tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, cls in MODELS.items():
        doc = (sys.modules[cls.__module__].__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=doc, description=f"Train {name}: {doc}",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_config_arguments(p, cls.config_class)
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def train_command(name: str, args: argparse.Namespace) -> int:
    from imgtrans.tracking import Tracker
    from imgtrans.train import Trainer, resolve_resume

    cls = MODELS[name]
    cfg, explicit = config_from_args(cls.config_class, args)
    config_mod.validate(cfg)
    cfg, payload = resolve_resume(cfg, explicit)
    tracker = Tracker(cfg.experiment, run_name=name)
    try:
        result = Trainer(cfg, tracker, resume_payload=payload, progress=not args.no_progress).fit()
    except BaseException as exc:
        tracker.finish("FAILED", error=_one_line(exc))
        raise
    tracker.finish()
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in result.val_metrics.items())
    print(f"imgtrans: {name} finished: run {result.run_id}, {result.step} steps{', ' + metrics if metrics else ''}")
    return 0


def _one_line(exc: BaseException) -> str:
    """The user-facing message; errors raised in loader workers arrive wrapped in a traceback."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    prefix = "imgtrans.errors.ImgtransError: "
    return last[len(prefix):] if last.startswith(prefix) else (last if len(lines) > 1 and
                                                               isinstance(exc, ImgtransError) else lines[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return train_command(args.command, args)
    except ImgtransError as exc:
        message = _one_line(exc)
        _fail_run(message)
        print(f"imgtrans: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _fail_run("interrupted")
        print("imgtrans: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: keep the traceback
        _fail_run(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1


def _fail_run(message: str) -> None:
    try:
        from imgtrans.tracking import fail_active_run
    except ImportError:
        return
    fail_active_run(message)
