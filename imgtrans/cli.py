"""The `imgtrans` command. Every MLproject entry point calls one of its subcommands.

    imgtrans pix2pix --dataset synthetic-facades --max-steps 200
    imgtrans export --run-id <run id>
    imgtrans translate scans/ colorized/ --model export/pix2pix-<run id>.onnx
    imgtrans <command> --help
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from imgtrans import config as config_mod
from imgtrans import interrupts
from imgtrans.commands import COMMANDS, load
from imgtrans.errors import ImgtransError, one_line
from imgtrans.files import sweep_scratch

# Set for a command line that holds only the options given, though in a run MLflow Projects made (the processes of
# a torchrun job that `nproc` starts, which continue the run; `mlflow run` itself passes every option).
ONLY_GIVEN_OPTIONS = "IMGTRANS_ONLY_GIVEN_OPTIONS"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str, command: str | None = None):  # one line instead of usage + message
        raise ImgtransError(f"{message} (see `{self.prog}{f' {command}' if command else ''} --help`)")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    types = config_mod.field_types(cls)
    for f in config_mod.fields(cls):
        tp = types[f.name]
        choices = config_mod.choices_of(tp)
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        if choices:
            help_text += f" ({'|'.join(choices)})"
        bounds = config_mod.bounds_of(cls, f.name)
        if bounds:
            help_text += f" ({config_mod.describe_range(bounds)})"
        if f.metadata.get("positional"):
            parser.add_argument(f"{f.name}_positional", nargs="?", default=None, metavar=f.name.upper(),
                                help=f"{help_text} (or {flag(f.name)})")
        names = [flag(f.name)] + ([f"--{f.name}"] if "_" in f.name else []) + f.metadata.get("aliases", [])
        # A bare boolean flag means true; MLproject passes an explicit true/false.
        extra = {"nargs": "?", "const": "true"} if tp is bool else {}
        parser.add_argument(*names, dest=f.name, default=None, metavar="CHOICE" if choices else tp.__name__.upper(),
                            help=f"{help_text} [default: {repr(f.default).replace('%', '%%')}]", **extra)


def bare_flags_made_true(argv: Sequence[str]) -> list[str]:
    """A boolean flag means true when no true/false word follows it: `true` is put in, so that argparse does not
    take the next argument (`translate --verbose scans/ out/`: the input folder) for its value."""
    command = next((COMMANDS[a] for a in argv if a in COMMANDS), None)
    if command is None:
        return list(argv)
    types = config_mod.field_types(command.config_class)
    booleans = {name for f in config_mod.fields(command.config_class) if types[f.name] is bool
                for name in (flag(f.name), f"--{f.name}", *f.metadata.get("aliases", []))}
    words = {*config_mod.TRUE_WORDS, *config_mod.FALSE_WORDS}
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg in booleans and (i + 1 == len(argv) or argv[i + 1].lower() not in words):
            out.append("true")
    return out


def config_from_args(cls: type, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The config, and what the user asked for: the options given on the command line (a resumed run takes
    them over its checkpoint's, a default value too). An MLflow project run passes every option, so there it
    is the values that differ from the declared defaults (not a default config's: an "auto" resolves later)."""
    values, given = {}, set()
    for f in config_mod.fields(cls):
        raw, positional = getattr(args, f.name), getattr(args, f"{f.name}_positional", None)
        if raw is not None and positional is not None and Path(raw) != Path(positional):  # out/ is out
            raise ImgtransError(f"{f.name.upper()} {positional} and --{f.name.replace('_', '-')} {raw} disagree; "
                                "give one of them")
        if raw is None:
            raw = positional
        if raw is not None:
            given.add(f.name)
        values[f.name] = f.default if raw is None else config_mod.parse_option(cls, f.name, raw)
    if os.environ.get("MLFLOW_RUN_ID") and not os.environ.get(ONLY_GIVEN_OPTIONS):
        given = {f.name for f in config_mod.fields(cls) if values[f.name] != f.default}
    return cls(**values), {name: values[name] for name in given}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imgtrans", description="Image-to-image translation experiments tracked in MLflow.")
    parser.add_argument("--offline", action="store_true",
                        help="never download pretrained weights (metrics without theirs are unavailable); "
                             "the same as IMGTRANS_OFFLINE=1")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        add_config_arguments(p, command.config_class)
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar" if command.progress_bar
                       else "accepted, for scripts that pass it to every command; this one shows no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        with interrupts.handled():
            args, unknown = parser.parse_known_args(bare_flags_made_true(sys.argv[1:] if argv is None else argv))
            if unknown:  # the command's options are what was mistyped: point to its help, not the list of commands
                parser.error(f"unrecognized arguments: {' '.join(unknown)}", args.command)
            if args.command is None:
                parser.print_help()
                return 2
            if args.offline:  # in the environment, so that the processes the command starts inherit it
                os.environ["IMGTRANS_OFFLINE"] = "1"  # weights.OFFLINE_VARIABLE, not imported: it needs torch
            sweep_scratch()
            command = COMMANDS[args.command]
            cfg, explicit = config_from_args(command.config_class, args)
            return command.run(cfg, explicit, progress=not args.no_progress)
    except (ImgtransError, OSError) as exc:  # bad input, or what the machine says no to (a full disk, …)
        message = one_line(exc)
        _end_run("FAILED", message)
        print(f"imgtrans: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        _end_run("KILLED", interrupts.reason(exc))
        print(f"imgtrans: {interrupts.reason(exc)}", file=sys.stderr)
        return interrupts.exit_code(exc)
    except Exception as exc:  # a bug, not bad input: keep the traceback
        _end_run("FAILED", f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1


def _end_run(status: str, message: str) -> None:
    """The run `mlflow run` opened, when the command ended before its own run could (e.g. a bad option)."""
    if "MLFLOW_RUN_ID" in os.environ:  # otherwise no run can be open: MLflow (seconds to import) stays out
        load("imgtrans.tracking.tracker:end_project_run")(status, message)
