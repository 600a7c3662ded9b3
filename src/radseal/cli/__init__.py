"""The single ``radseal`` entry point.

A thin shell: each subcommand module adds its parser with ``register`` and
calls the library; this module turns known errors into one line on stderr
and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading

from radseal.errors import RadsealError

#: Set to 1 to let unexpected exceptions keep their traceback (for debugging).
DEBUG_ENV = "RADSEAL_DEBUG"

# One module per group of subcommands; each defines register(subparsers).
SUBCOMMAND_MODULES = (
    "radseal.cli.demo",
    "radseal.cli.keys",
    "radseal.cli.codec",
    "radseal.cli.transport",
    "radseal.cli.evaluate",
    "radseal.cli.paper",
)


def _missing_extra(exc: BaseException, command: str) -> str | None:
    """The one-line message for a package that only an extra installs, reached by a code path
    without its own check (those raise radseal.extras.MissingExtraError); None for anything else."""
    if not isinstance(exc, ModuleNotFoundError):
        return None
    from radseal.extras import extra_for, missing_message

    extra = extra_for(exc.name or "", command)
    return missing_message(exc.name, extra, f"radseal {command}") if extra else None


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


def quality_help() -> str:
    """The --quality help text, with the default codec's range and default (no weights are loaded)."""
    from radseal.codec.api import default_codec_class

    codec_cls = default_codec_class()
    codec = codec_cls("help")
    text = (f"codec quality level, an integer from {codec.qualities[0]} (smallest file) to "
            f"{codec.qualities[-1]} (most detail) (default, without --quality or --bpp: "
            f"{codec_cls.DEFAULT_RATE_TEXT})")
    if codec.qualities[-1] > 16:
        text += ("; levels above 16 matter for images of more than 8 bits and reach near-lossless "
                 f"(about one stored value at 16 bits by {codec.qualities[-1]})")
    return text


def bpp_help() -> str:
    """The --bpp help text, naming the default rate."""
    from radseal.codec.api import Codec

    return f"target bits per pixel instead of a quality level (default: {Codec.DEFAULT_RATE_TEXT})"


def fail(message: str, code: int = 2) -> int:
    # One line, whatever the message holds (library messages may embed newlines).
    text = " ".join(str(message).split()) or "failed"
    print(f"radseal: error: {text}", file=sys.stderr)
    return code


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that cleanup code runs (no half-written files)."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_exception():
    """Within the block, SIGTERM unwinds the stack like Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _os_error_text(exc: OSError) -> str:
    """``path: reason`` for an operating-system error, as a user wants to read it."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so that the exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_as_exception():
            result = args.func(args)
            sys.stdout.flush()  # a full disk or closed pipe on stdout is an error too
    except RadsealError as exc:
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Terminated:
        return fail("terminated", 143)
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except OSError as exc:
        # Files and folders a user named (missing, a folder, no permission, disk full) reach
        # here when a command did not wrap the error itself: still one line, no traceback.
        if os.environ.get(DEBUG_ENV):
            raise
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            _silence_stdout()  # stdout itself failed (disk full): do not fail again at exit
            return fail(f"cannot write the output: {_os_error_text(exc)}", 1)
        return fail(_os_error_text(exc), 1)
    except Exception as exc:  # noqa: BLE001 - the last line of defence; the message says it is a bug
        if os.environ.get(DEBUG_ENV):
            raise
        missing = _missing_extra(exc, args.command)
        if missing:
            return fail(missing)
        return fail(f"unexpected {type(exc).__name__}: {exc} (this is a bug in radseal; "
                    f"rerun with {DEBUG_ENV}=1 for the traceback)", 70)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
