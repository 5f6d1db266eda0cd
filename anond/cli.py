"""Command line: anond process | models | run | check | eval.

Each sub-command lives in the module that owns it (`add_arguments(parser)` and `main(args)`);
this file only wires them. Expected errors print one line and exit non-zero, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import AnondError

COMMANDS = {
    "process": ("anond.commands.process", "anonymize a file or a directory tree into DST"),
    "models": ("anond.models", "install and list the detection models"),
    "run": ("anond.service", "run the service in the foreground (what systemd starts)"),
    "check": ("anond.check", "validate config, models, provider, folders and free space"),
    "eval": ("anond.eval", "measure detection and masking quality on a labelled data set"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anond", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"anond {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        try:
            module_obj = _module(module)
        except ModuleNotFoundError as exc:  # a stage not installed in this build
            if exc.name != module:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="TOML configuration file (default: $ANOND_CONFIG)")
        p.add_argument("--log-level", default="warning", help="debug, info, warning, error")
        p.set_defaults(_module=module)
        module_obj.add_arguments(p)
    return parser


def _module(name: str):
    return importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import log

    log.configure(args.log_level)
    try:
        return int(_module(args._module).main(args) or 0)
    except AnondError as exc:
        print(f"anond {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
