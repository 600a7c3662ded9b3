"""The single ``radseal`` entry point.

A thin shell: each subcommand module adds its parser with ``register`` and
calls the library; this module turns known errors into one line on stderr
and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from radseal.errors import RadsealError

# One module per group of subcommands; each defines register(subparsers).
SUBCOMMAND_MODULES = (
    "radseal.cli.demo",
    "radseal.cli.keys",
    "radseal.cli.codec",
    "radseal.cli.transport",
    "radseal.cli.evaluate",
    "radseal.cli.paper",
)


def build_parser() -> argparse.ArgumentParser:
    from radseal import __version__

    parser = argparse.ArgumentParser(
        prog="radseal",
        description=(
            "Compress radiographs with a learned codec, seal them for one receiver with "
            "HPKE and a device signature, send them, store them as DICOM and check that "
            "the diagnosis survived."
        ),
    )
    parser.add_argument("--version", action="version", version=f"radseal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def fail(message: str, code: int = 2) -> int:
    print(f"radseal: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except RadsealError as exc:
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except BrokenPipeError:
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
