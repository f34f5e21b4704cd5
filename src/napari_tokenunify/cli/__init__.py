"""The ``tokenunify`` command line.

Each sub-command lives in its own module ``cli/cmd_<name>.py`` exposing
``register(subparsers) -> None`` which adds its parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Modules are discovered automatically.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from .. import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenunify",
        description="Neuron segmentation of EM volumes with TokenUnify-pretrained Mamba networks.",
    )
    parser.add_argument("--version", action="version", version=f"napari-tokenunify {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            module.register(sub)
    for command in sub.choices.values():  # one thread setting for every command
        if not any("--threads" in a.option_strings for a in command._actions):
            command.add_argument(
                "--threads", default=None, metavar="N",
                help="CPU threads to use (default: TOKENUNIFY_THREADS, OMP_NUM_THREADS, else every "
                "core this process may use)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "threads", None) is not None:
            from ..threads import set_threads

            set_threads(args.threads)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ncancelled (Ctrl-C); completed work is kept and the next run resumes.", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, ValueError, PermissionError) as err:
        print(f"tokenunify {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
