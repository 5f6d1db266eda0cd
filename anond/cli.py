"""Command line: anond process | models | run | check | eval | status | retry | web.

Each sub-command lives in the module that owns it (`add_arguments(parser)` and `main(args)`);
this file only wires them. Expected errors print one line and exit non-zero, no traceback.
The global options (--config, --log-level) are accepted before or after the sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import AnondError
from .log import LEVELS

COMMANDS = {
    "process": ("anond.commands.process", "anonymize a file or a directory tree into DST"),
    "models": ("anond.models", "install and list the detection models"),
    "run": ("anond.service", "run the service in the foreground (what systemd starts)"),
    "check": ("anond.check", "validate config, models, provider, folders and free space"),
    "eval": ("anond.eval", "measure detection and masking quality on a labelled data set"),
    "status": ("anond.commands.status", "queue, running and failed jobs per inbox (counts only)"),
    "retry": ("anond.commands.retry", "move failed inputs back to their inbox for another try"),
    "web": ("anond.web", "serve the review UI (results of review inboxes wait for approval)"),
}
# Exit status of an expected error (bad configuration, missing model, bad input): the unit's
# RestartPreventExitStatus=, so a configuration error does not restart the service forever.
EXIT_ERROR = 2


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--config and --log-level; on the sub-commands they default to "not given" so a value put
    before the sub-command is not overwritten by the sub-parser's default."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", default=default,
                        help="TOML configuration file (default: $ANOND_CONFIG, else embedded defaults)")
    parser.add_argument("--log-level", default=default, choices=LEVELS,
                        help="events logged (default: warning; `run`: [service] log_level, info)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anond", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"anond {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        try:
            module_obj = _module(module)
        except ModuleNotFoundError as exc:  # a stage not installed in this build
            if exc.name != module:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(p, suppress=True)
        p.set_defaults(_module=module)
        module_obj.add_arguments(p)
    return parser


def _module(name: str):
    return importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import log

    log.configure(args.log_level or "warning")  # `run` sets its own once the settings are read
    try:
        return int(_module(args._module).main(args) or 0)
    except AnondError as exc:
        print(f"anond {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
