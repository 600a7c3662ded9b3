"""``radseal serve`` and ``radseal send``: the receiver service and the device sender.

A thin shell over :mod:`radseal.transport`: parse arguments, load keys,
call the library, print progress. Deployment notes: docs/deploy.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import socket
import ssl
import sys
from pathlib import Path

from radseal.errors import RadsealError

DEFAULT_PORT = 8700
DEFAULT_STATE = "radseal-state"
DEFAULT_OUTBOX = "radseal-outbox"
MAX_PASSPHRASE_BYTES = 64 << 10
# The receiver's defaults, repeated here so that the CLI starts without importing the
# server stack (tests/test_hardening_receiver.py checks they match the library's).
DEFAULT_MAX_UPLOADS = 256
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_GRACE = 30.0
DEFAULT_MIN_RATE = 8 * 1024


class TransportUsageError(RadsealError):
    """An argument combination the transport commands cannot use."""


def _passphrase(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:  # bounded: a pipe or /dev/stdin is fine, /dev/zero must not eat memory
            text = fh.read(MAX_PASSPHRASE_BYTES + 1)
    except OSError as exc:
        raise TransportUsageError(f"{path}: cannot read passphrase file ({exc.strerror or exc})") from None
    if len(text) > MAX_PASSPHRASE_BYTES:
        raise TransportUsageError(f"{path}: too large for a passphrase file (over {MAX_PASSPHRASE_BYTES} bytes)")
    secret = text.rstrip(b"\r\n")
    if not secret:
        raise TransportUsageError(f"{path}: passphrase file is empty")
    return secret


class _PassphraseAfterKey(argparse.Action):
    """``--passphrase-file`` for ``serve``: remembers which ``--key`` it follows (argparse reads in order)."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        pairs = list(getattr(namespace, self.dest, None) or [])
        pairs.append((len(getattr(namespace, "key", None) or []), value))
        setattr(namespace, self.dest, pairs)


def _key_passphrases(keys: list[str], files: list[tuple[int, str]] | None) -> list[str | None]:
    """The passphrase file of each ``--key``: the ``--passphrase-file`` given right after it.

    With a single ``--key`` the order does not matter. A passphrase file before
    every key, or two after the same key, is a usage error; a key with no
    passphrase file after it is loaded as an unprotected key.
    """
    chosen: list[str | None] = [None] * len(keys)
    files = files or []
    if len(keys) == 1 and len(files) == 1:
        return [files[0][1]]
    for after, path in files:
        if after == 0:
            raise TransportUsageError(
                f"--passphrase-file {path} comes before any --key: with several keys, give each "
                "--passphrase-file right after the --key it unlocks (--key A.key --passphrase-file A.pass --key B.key)"
            )
        if chosen[after - 1] is not None:
            raise TransportUsageError(
                f"--key {keys[after - 1]} is followed by two passphrase files ({chosen[after - 1]}, {path}); give one per key"
            )
        chosen[after - 1] = path
    return chosen


def _load_receiver_keys(paths: list[str], passphrase_files: list[tuple[int, str]] | None) -> list:
    """Receiver keys, each with its own passphrase (or none); duplicates of one key are refused."""
    from radseal.seal import load_receiver_key

    keys = [load_receiver_key(path, _passphrase(secret)) for path, secret in zip(paths, _key_passphrases(paths, passphrase_files))]
    seen: dict[str, str] = {}
    for path, key in zip(paths, keys):
        if key.key_id in seen:
            raise TransportUsageError(f"--key {path} is the same key as --key {seen[key.key_id]}")
        seen[key.key_id] = path
    return keys


def _load_codec():
    from radseal.pipeline import default_codec

    return default_codec()


# --------------------------------------------------------------------------- serve


def _port(text: str) -> int:
    """argparse type: a TCP port number."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def _check_tls(certfile: str, keyfile: str) -> None:
    """Load the certificate and key once now, so that a bad pair fails before anything starts."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise TransportUsageError(f"{exc.filename or certfile}: no such TLS certificate or key file") from None
    except (OSError, ssl.SSLError) as exc:
        raise TransportUsageError(
            f"cannot load the TLS certificate {certfile} with key {keyfile} ({getattr(exc, 'reason', None) or exc})"
        ) from None


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket before the service starts: a taken port or unknown host is a clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise TransportUsageError(f"--host {host}: cannot resolve ({getattr(exc, 'strerror', None) or exc})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise TransportUsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


class _NewFolders:
    """Folders that do not exist yet; if the start fails, whatever was made in them is removed."""

    def __init__(self, *paths: Path) -> None:
        self.created = [p for p in paths if not p.exists()]

    def remove(self) -> None:
        for folder in self.created:
            shutil.rmtree(folder, ignore_errors=True)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from radseal.cli import Terminated
    from radseal.seal import load_trusted
    from radseal.transport.receiver import Limits, create_app, default_diagnose
    from radseal.transport.server import MAX_HEADER_BYTES, configure_logging, connection_limit, guarded_h11
    from radseal.transport.stores import open_store

    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise TransportUsageError("--ssl-certfile and --ssl-keyfile go together")
    if not (math.isfinite(args.max_body) and args.max_body > 0):
        raise TransportUsageError(f"--max-body must be a positive number of MiB, got {args.max_body}")
    for name in ("max_pixels", "max_uploads", "max_connections"):
        if getattr(args, name) < 1:
            raise TransportUsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("header_timeout", "body_timeout", "min_rate"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise TransportUsageError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    limits = Limits(
        max_body=int(args.max_body * 1024 * 1024),
        max_uploads=args.max_uploads,
        body_grace=args.body_timeout,
        min_rate=args.min_rate * 1024,
        max_pixels=args.max_pixels,
    )
    state = Path(args.state)
    if state.exists() and not state.is_dir():
        raise TransportUsageError(f"{state}: --state must be a folder")
    keys = _load_receiver_keys(args.key, args.passphrase_file)
    trusted = load_trusted(args.trust)
    if args.ssl_certfile:
        _check_tls(args.ssl_certfile, args.ssl_keyfile)
    sock = _listen(args.host, args.port)
    new_folders = _NewFolders(state, *(() if "://" in str(args.store) else (Path(args.store),)))
    try:
        store = open_store(args.store)
        if hasattr(store, "check"):
            store.check()  # fail at start, not on the first image, when Orthanc is unreachable
        try:
            from radseal.transport.files import private_mkdir

            private_mkdir(state / "archive")
        except OSError as exc:
            raise TransportUsageError(f"{state}: cannot create the state folder ({exc.strerror or exc})") from None
        from radseal.transport.index import open_index

        index = open_index(args.index if args.index else state / "index.sqlite")
        codec = _load_codec()
        diagnose = default_diagnose() if args.diagnosis == "auto" else None
        configure_logging(logging.INFO)
        app = create_app(
            keys,
            trusted,
            store,
            index,
            archive_dir=state / "archive",
            codec=codec,
            diagnose=diagnose,
            limits=limits,
            metrics=args.metrics,
        )
    except BaseException:
        sock.close()
        new_folders.remove()
        raise

    connections = connection_limit(args.max_connections, args.max_uploads)
    scheme = "https" if args.ssl_certfile else "http"
    print(
        f"radseal receiver on {scheme}://{args.host}:{sock.getsockname()[1]}/v1/messages\n"
        f"  keys: {', '.join(k.key_id for k in keys)}; trusted devices: {len(trusted)}\n"
        f"  store: {store!r}; index: {index!r}; archive: {state}/archive/; max body {args.max_body:g} MiB; "
        f"diagnosis: {'on' if diagnose else 'off'}; metrics: {'/metrics' if args.metrics else 'off'}\n"
        f"  limits: {connections} connections, {args.max_uploads} uploads in flight, headers within {args.header_timeout:g} s, "
        f"body within {args.body_timeout:g} s + 1 s per {args.min_rate:g} KiB, images up to {args.max_pixels} pixels",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        http=guarded_h11(args.header_timeout),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=connections,
        timeout_keep_alive=5,
        log_config=None,  # configure_logging's one-line handler, not uvicorn's (which prints tracebacks)
        log_level="warning",
        access_log=False,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except (KeyboardInterrupt, Terminated):
        pass  # Ctrl-C or a service manager's SIGTERM is how a receiver is stopped; uvicorn has shut down cleanly
    finally:
        sock.close()
    print("radseal receiver stopped", flush=True)
    return 0


# --------------------------------------------------------------------------- send


def _ca_context(cacert: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cacert)
    except FileNotFoundError:
        raise TransportUsageError(f"{cacert}: no such CA bundle (--cacert)") from None
    except (OSError, ssl.SSLError) as exc:
        raise TransportUsageError(f"{cacert}: not a readable PEM CA bundle ({getattr(exc, 'reason', None) or exc})") from None


def _input_problem(name: str) -> str | None:
    """Why ``name`` cannot be an input image (missing, a folder, a device), or None."""
    p = Path(name)
    if p.is_dir():
        return f"{p}: is a folder, not an image file"
    if not p.exists():
        return f"{p}: no such file"
    if not p.is_file():
        return f"{p}: not a regular file"
    return None


def _input_error(path: str, exc: BaseException) -> str:
    """``FILE: reason`` for a file that could not be read or sealed (the path named once)."""
    if isinstance(exc, OSError):
        text = f"{path}: {exc.strerror or exc}"
    elif isinstance(exc, RadsealError):
        text = str(exc)
    else:  # not expected: a bug, but one image must not stop the others
        text = f"{type(exc).__name__}: {exc} (this is a bug in radseal)"
    text = " ".join(text.split())
    return text if text.startswith(f"{path}:") else f"{path}: {text}"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_RETAIN_DELIVERED = "7d"


def _duration(text: str) -> float:
    """argparse type: ``0`` or a number with a unit s, m, h or d (``7d``, ``12h``)."""
    value = text.strip().lower()
    try:
        if value == "0":
            return 0.0
        if value[-1:] in _DURATION_UNITS:
            seconds = float(value[:-1]) * _DURATION_UNITS[value[-1]]
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use 0 or a number with s, m, h or d, e.g. 7d")


def _send(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from radseal.seal import load_device_key, load_receiver_public_key
    from radseal.transport.errors import DeliveryError, OutboxError
    from radseal.transport.outbox import OUTBOX_FILE, Outbox
    from radseal.transport.sender import RetryPolicy, Sender, enqueue_image, messages_url

    if not args.inputs and not args.flush:
        raise TransportUsageError("give images to send, or --flush to deliver what the outbox holds")
    if args.inputs and args.flush:
        raise TransportUsageError("--flush delivers the outbox only; give images or --flush, not both")
    if args.inputs and (args.recipient is None or args.sign is None):
        raise TransportUsageError("sending images needs --recipient RECEIVER.pub and --sign DEVICE.key")
    if args.retries < 1:
        raise TransportUsageError("--retries must be at least 1")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise TransportUsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if not (math.isfinite(args.backoff) and args.backoff >= 0):
        raise TransportUsageError(f"--backoff must be zero or a positive number of seconds, got {args.backoff}")
    messages_url(args.to)  # a malformed URL fails here, before the outbox is touched
    verify = _ca_context(args.cacert) if args.cacert else True
    outbox_file = Path(args.outbox) / OUTBOX_FILE
    if args.flush and not outbox_file.is_file():
        raise TransportUsageError(f"{args.outbox}: no outbox here (nothing to flush; check --outbox)")

    recipient = signer = codec = None
    if args.inputs:
        recipient = load_receiver_public_key(args.recipient)
        signer = load_device_key(args.sign, _passphrase(args.passphrase_file))
        codec = _load_codec()
        if args.quality is not None and args.quality not in codec.qualities:
            raise TransportUsageError(
                f"--quality must be in {codec.qualities[0]}..{codec.qualities[-1]}, got {args.quality}"
            )

    new_outbox = _NewFolders(Path(args.outbox)) if not outbox_file.exists() else None
    outbox = Outbox(args.outbox)
    try:
        sender = Sender(
            args.to,
            outbox,
            retry=RetryPolicy(base=args.backoff, cap=30.0, max_attempts=args.retries),
            timeout=args.timeout,
            verify=verify,
        )
    except BaseException:
        _drop_if_unused(outbox, new_outbox)
        raise
    out = sys.stdout
    names: dict[str, str] = {}  # message id -> input path, for this run's lines only (the outbox keeps no path)
    bad_inputs: list[str] = []

    if args.inputs:
        try:
            for path in tqdm(args.inputs, desc="sealing", unit="image", disable=args.quiet or len(args.inputs) < 2, file=sys.stderr):
                # One bad file is reported and skipped; every readable one is still sealed and sent.
                problem = _input_problem(path)
                if problem is None:
                    try:
                        queued = enqueue_image(outbox, path, recipient, signer, codec=codec, quality=args.quality, again=args.again)
                    except Exception as exc:  # noqa: BLE001 - reported per file; KeyboardInterrupt still stops the run
                        if isinstance(exc, OutboxError):
                            raise  # the outbox itself failing is not about this file
                        problem = _input_error(path, exc)
                if problem is not None:
                    bad_inputs.append(path)
                    tqdm.write(f"radseal: error: {problem}", file=sys.stderr)
                    continue
                names[queued.message_id] = path
                if queued.new:
                    tqdm.write(f"sealed  {path}: message {queued.message_id}, {queued.sealed_bytes} bytes", file=out)
                elif queued.state == "delivered":
                    tqdm.write(f"skipped {path}: already delivered as message {queued.message_id} (--again sends a new copy)", file=out)
                else:
                    tqdm.write(f"queued  {path}: already in the outbox as message {queued.message_id} ({queued.state})", file=out)
        except BaseException:
            # Images sealed before the failure stay queued (the next run delivers them);
            # an outbox this run created and never used is removed again.
            sender.close()
            _drop_if_unused(outbox, new_outbox)
            raise
        if new_outbox is not None and not names:
            # Nothing readable and nothing queued before: each file had its line; no outbox is left behind.
            sender.close()
            _drop_if_unused(outbox, new_outbox)
            return EXIT_NO_INPUT

    pending = outbox.pending()
    bar = tqdm(total=len(pending), desc="sending", unit="msg", disable=args.quiet or len(pending) < 2, file=sys.stderr)

    def name(entry) -> str:
        return names.get(entry.message_id, entry.source)

    def delivered(entry, receipt) -> None:
        bar.update(1)
        diagnosis = receipt.get("diagnosis")
        note = f", {diagnosis.get('name')} p={diagnosis.get('probability'):.2f}" if isinstance(diagnosis, dict) and "probability" in diagnosis else ""
        tqdm.write(
            f"stored  {name(entry)}: message {entry.message_id} as {receipt['sop_instance_uid']} "
            f"({receipt['sealed_bytes']} bytes sent, {receipt['ratio']:.1f}:1{note})",
            file=out,
        )

    def retrying(entry, attempt, error, delay) -> None:
        tqdm.write(f"retry   {name(entry)}: attempt {attempt} failed ({error}); next in {delay:.1f} s", file=sys.stderr)

    last_error: list[str] = []

    def failed(entry, error) -> None:
        # Reported with the other per-message lines on stdout; stderr gets the one-line summary.
        bar.update(1)
        last_error[:] = [error]
        tqdm.write(f"failed  {name(entry)}: {error}", file=out)

    with sender:
        result = sender.flush(on_delivered=delivered, on_retry=retrying, on_failed=failed)
    bar.close()
    purged = outbox.purge_delivered(args.retain_delivered)
    counts = outbox.counts()
    print(
        f"delivered {len(result.delivered)}, refused {len(result.refused)}, still pending {len(result.pending)}"
        + (f", unreadable inputs {len(bad_inputs)}" if bad_inputs else "")
        + f" (outbox {outbox.path}: {counts['pending']} pending, {counts['refused']} refused, "
        f"{counts['delivered']} delivered kept{f', {purged} older purged' if purged else ''})",
        file=out,
    )
    if result.pending or result.refused:
        hints = []
        if result.pending:
            hints.append(f"run 'radseal send --flush --to {args.to} --outbox {args.outbox}' to retry pending ones")
        if result.refused:
            hints.append(f"'radseal outbox status --outbox {args.outbox}' says why refused ones were refused")
        hint = "; ".join(hints)
        if len(result.pending) + len(result.refused) == 1 and last_error:
            raise DeliveryError(f"{last_error[0]} ({hint})")
        raise DeliveryError(
            f"{len(result.pending) + len(result.refused)} message(s) not delivered; they stay in the outbox ({hint})"
        )
    if bad_inputs:
        return EXIT_INPUTS_FAILED if names else EXIT_NO_INPUT
    return 0


#: ``radseal send`` exit status when some input files could not be read or sealed but every
#: message that was sealed is delivered (messages left undelivered: 2, as for other errors).
EXIT_INPUTS_FAILED = 1
#: ... when no input file could be read (each one reported on its own line).
EXIT_NO_INPUT = 2


def _drop_if_unused(outbox, new_outbox: "_NewFolders | None") -> None:
    """Remove an outbox this run created if it holds no message (a failed first run leaves nothing behind)."""
    if new_outbox is None:
        return
    try:
        if sum(outbox.counts().values()):
            return
    except Exception:  # noqa: BLE001 - an unreadable new outbox holds nothing worth keeping
        pass
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{outbox.path}{suffix}").unlink(missing_ok=True)
    new_outbox.remove()


# --------------------------------------------------------------------------- gateway


DEFAULT_AE_TITLE = "RADSEAL"
DEFAULT_DICOM_PORT = 11112


def _ae_title(text: str) -> str:
    """argparse type: a DICOM AE title (1 to 16 printable ASCII characters, no backslash)."""
    value = text.strip()
    if not 1 <= len(value) <= 16 or not all(" " <= c <= "~" and c != "\\" for c in value):
        raise argparse.ArgumentTypeError(f"invalid AE title {text!r}: 1 to 16 printable ASCII characters, no backslash")
    return value


def _gateway(args: argparse.Namespace) -> int:
    from radseal.cli import Terminated
    from radseal.seal import load_device_key, load_receiver_public_key
    from radseal.transport.gateway import Gateway
    from radseal.transport.outbox import OUTBOX_FILE, Outbox
    from radseal.transport.sender import RetryPolicy, messages_url

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise TransportUsageError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if not (math.isfinite(args.backoff) and args.backoff >= 0):
        raise TransportUsageError(f"--backoff must be zero or a positive number of seconds, got {args.backoff}")
    if args.max_pixels < 1:
        raise TransportUsageError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    messages_url(args.to)
    verify = _ca_context(args.cacert) if args.cacert else True
    recipient = load_receiver_public_key(args.recipient)
    signer = load_device_key(args.sign, _passphrase(args.passphrase_file))
    codec = _load_codec()
    if args.quality is not None and args.quality not in codec.qualities:
        raise TransportUsageError(f"--quality must be in {codec.qualities[0]}..{codec.qualities[-1]}, got {args.quality}")
    new_outbox = _NewFolders(Path(args.outbox)) if not (Path(args.outbox) / OUTBOX_FILE).exists() else None
    outbox = Outbox(args.outbox)

    def report(line: str) -> None:
        print(line, flush=True)

    try:
        gateway = Gateway(
            outbox, recipient, signer, to=args.to, ae_title=args.ae_title, allow_ae=args.allow_ae, codec=codec,
            quality=args.quality, retry=RetryPolicy(base=args.backoff, cap=30.0), timeout=args.timeout,
            verify=verify, report=report, max_pixels=args.max_pixels, retain_delivered=args.retain_delivered,
        )
    except BaseException:
        _drop_if_unused(outbox, new_outbox)
        raise
    try:
        port = gateway.start(args.host, args.port)
    except OSError as exc:
        gateway.stop()
        _drop_if_unused(outbox, new_outbox)
        raise TransportUsageError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    counts = outbox.counts()
    print(
        f"radseal gateway: DICOM SCP {args.ae_title} on {args.host}:{port} (C-STORE, C-ECHO)\n"
        f"  calling AE titles: {', '.join(args.allow_ae) if args.allow_ae else 'any (no --allow-ae)'}\n"
        f"  delivering to {messages_url(args.to)}; outbox {outbox.path}: {counts['pending']} pending, "
        f"{counts['refused']} refused",
        flush=True,
    )
    try:
        gateway.deliver_forever()
    except (KeyboardInterrupt, Terminated):
        pass  # how a gateway is stopped; what was answered Success is in the outbox
    finally:
        gateway.stop()
    print("radseal gateway stopped", flush=True)
    return 0


# --------------------------------------------------------------------------- outbox


def _open_outbox(directory: str):
    from radseal.transport.outbox import OUTBOX_FILE, Outbox

    if not (Path(directory) / OUTBOX_FILE).is_file():
        raise TransportUsageError(f"{directory}: no outbox here (check --outbox)")
    return Outbox(directory)


def _when(timestamp: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _outbox_status(args: argparse.Namespace) -> int:
    import time

    outbox = _open_outbox(args.outbox)
    counts = outbox.counts()
    waiting = outbox.rows(("pending", "refused"))
    pending_since = [row.created for row in waiting if row.state == "pending"]
    oldest = f"; oldest pending {_age(time.time() - min(pending_since))} old" if pending_since else ""
    print(f"outbox {outbox.path}: {counts['pending']} pending, {counts['refused']} refused, "
          f"{counts['delivered']} delivered kept{oldest}")
    for row in waiting:
        if row.state == "refused":
            status = f"HTTP {row.refused_status} " if row.refused_status else ""
            print(f"refused {row.message_id} ({row.source}, {row.sealed_bytes} bytes, {_when(row.updated)}): "
                  f"{status}{row.refused_code}: {row.last_error}")
        else:
            note = f"; last error: {row.last_error}" if row.last_error else ""
            print(f"pending {row.message_id} ({row.source}, {row.sealed_bytes} bytes, "
                  f"{row.attempts} attempt(s) so far{note})")
    if args.all:
        for row in outbox.rows(("delivered",)):
            print(f"delivered {row.message_id} ({row.source}, {_when(row.updated)})")
    if counts["refused"]:
        print(f"after a fix: 'radseal outbox retry --all --outbox {args.outbox}' (or name message ids), "
              "then 'radseal send --flush'")
    return 0


def _outbox_retry(args: argparse.Namespace) -> int:
    if bool(args.message_ids) == bool(args.all):
        raise TransportUsageError("name the message ids to retry, or --all for every refused message")
    outbox = _open_outbox(args.outbox)
    ids = outbox.retry(None if args.all else list(args.message_ids))
    for message_id in ids:
        print(f"pending {message_id}: will be sent by the next 'radseal send' run")
    print(f"{len(ids)} refused message(s) back to pending")
    return 0


def _outbox_purge(args: argparse.Namespace) -> int:
    outbox = _open_outbox(args.outbox)
    print(f"purged {outbox.purge_delivered(args.retain_delivered)} delivered message record(s)")
    return 0


# --------------------------------------------------------------------------- register


def register(sub) -> None:
    from radseal.cli import quality_help
    from radseal.image import DEFAULT_MAX_PIXELS

    serve = sub.add_parser(
        "serve",
        help="run the receiver: accept sealed images over HTTP(S), store them as DICOM",
        description=(
            "Run the receiver service (FastAPI on uvicorn). POST /v1/messages takes one sealed "
            "container as the raw body; the receiver verifies and opens it, archives the sealed bytes, "
            "decodes the image, stores a derived DICOM object, records it in the receipt index (SQLite, or "
            "PostgreSQL shared by several receivers) and only "
            "then answers with a JSON receipt. A duplicate message id gets the same receipt and is "
            "stored once. GET /healthz answers when the service is up."
        ),
        epilog=(
            "examples:\n"
            "  radseal serve --key keys/receiver.key --trust keys/devices/ --store pacs-folder/\n"
            "  radseal serve --key keys/receiver.key --trust keys/devices/ --store dicom://PACS@pacs.hospital.example:104\n"
            "  radseal serve --key keys/receiver.key --trust keys/devices/ --store orthanc+http://127.0.0.1:8042 \\\n"
            "      --host 0.0.0.0 --port 8443 --ssl-certfile tls/cert.pem --ssl-keyfile tls/key.pem\n"
            "  radseal serve --key new.key --passphrase-file new.pass --key old.key \\\n"
            "      --trust keys/devices/ --trust keys/xray-unit-9.pub --store pacs-folder/   # rotation: each key its own passphrase\n"
            "  radseal serve --key keys/receiver.key --trust keys/devices/ --store /srv/pacs-folder \\\n"
            "      --index postgresql://radseal@127.0.0.1:55432/radseal --state /srv/shared-state --port 8701   # one of a fleet\n"
            "folder store layout: STORE/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm;\n"
            "index and archive: STATE/index.sqlite, STATE/archive/<sender key id>/<message id>.rsl; uploads being received: STATE/incoming/.\n"
            "Limits on slow clients, memory and image size: docs/deploy.md (Limits)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--key", action="append", required=True, metavar="RECEIVER.key",
                       help="receiver private key; repeat for key rotation (old and new keys)")
    serve.add_argument("--trust", nargs="+", action="extend", required=True, metavar="DIR|FILE",
                       help="trusted device public keys: .pub files or folders of them (repeat as needed; all are trusted)")
    serve.add_argument("--store", required=True, metavar="DIR|URL",
                       help="where DICOM objects go: a folder; Orthanc's REST API (orthanc+http://HOST:PORT; "
                            "orthanc+https:// and user:pass@ work too); any PACS by C-STORE (dicom://AE@HOST:PORT, "
                            "?calling=AE sets this receiver's AE title, default RADSEAL) or by DICOMweb STOW-RS "
                            "(dicomweb+http(s)://HOST:PORT/PATH)")
    serve.add_argument("--state", default=DEFAULT_STATE, metavar="DIR",
                       help=f"folder for the SQLite index and the archive of sealed messages; with --index, one folder every "
                            f"receiver of the fleet shares (default: {DEFAULT_STATE})")
    serve.add_argument("--index", metavar="postgresql://USER@HOST:PORT/DB",
                       help="receipt index on a PostgreSQL server, shared by several receivers behind a load "
                            "balancer (their --state must then be one shared folder); default: STATE/index.sqlite")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--max-body", type=float, default=64, metavar="MIB",
                       help="largest accepted message in MiB, enforced while reading (default: 64)")
    serve.add_argument("--ssl-certfile", metavar="PEM", help="TLS certificate chain (uvicorn's ssl_certfile)")
    serve.add_argument("--ssl-keyfile", metavar="PEM", help="TLS private key (uvicorn's ssl_keyfile)")
    serve.add_argument("--passphrase-file", action=_PassphraseAfterKey, metavar="FILE",
                       help="file holding the passphrase of the --key given just before it (one per protected key)")
    serve.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help=f"largest image decoded, width x height in pixels, checked before decoding (default: {DEFAULT_MAX_PIXELS})")
    serve.add_argument("--max-uploads", type=int, default=DEFAULT_MAX_UPLOADS, metavar="N",
                       help=f"requests in flight at once; more are answered 503 and retried (default: {DEFAULT_MAX_UPLOADS})")
    serve.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                       help=f"open connections at once, lowered to what the open-file limit allows (default: {DEFAULT_MAX_CONNECTIONS})")
    serve.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT, metavar="S",
                       help=f"seconds a client has to send its request headers (default: {DEFAULT_HEADER_TIMEOUT:g})")
    serve.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_GRACE, metavar="S",
                       help=f"seconds a body may take before --min-rate applies (default: {DEFAULT_BODY_GRACE:g})")
    serve.add_argument("--min-rate", type=float, default=DEFAULT_MIN_RATE / 1024, metavar="KIB/S",
                       help=f"average upload rate a body must keep after --body-timeout (default: {DEFAULT_MIN_RATE / 1024:g})")
    serve.add_argument("--diagnosis", choices=("auto", "off"), default="auto",
                       help="run the pneumonia classifier on each stored image when it is available (default: auto)")
    serve.add_argument("--metrics", action="store_true",
                       help="serve GET /metrics in Prometheus format: messages stored, duplicates, refusals by status "
                            "and code, bytes in, decode and store latency (off by default: it tells any client how busy "
                            "the receiver is; expose it to the monitoring network only)")
    serve.set_defaults(func=_serve)

    send = sub.add_parser(
        "send",
        help="seal images and deliver them to a receiver through a durable outbox",
        description=(
            "Compress and seal each image for the receiver, commit it to the outbox (SQLite, fsync'd), "
            "then deliver the outbox: every message is retried with exponential backoff and jitter until "
            "a receipt naming its message id, this device's key id and the SHA-256 of its sealed bytes "
            "comes back, and only then dropped. A message the receiver refuses for good (malformed, "
            "unknown sender, conflict, too large, wrong recipient, not authentic, undecodable) is set "
            "aside, see 'radseal outbox'. Messages left over from an interrupted run are delivered first; "
            "an input already in the outbox is not sealed twice. A file that cannot be read is reported "
            "and skipped; the others are sent."
        ),
        epilog=(
            "examples:\n"
            "  radseal send scans/*.dcm --to https://gw.hospital.example:8443 --recipient receiver.pub --sign device.key\n"
            "  radseal send --flush --to https://gw.hospital.example:8443      # deliver what is left in the outbox\n"
            "exit status: 0 when everything was delivered; 1 when some input files could not be read or\n"
            "sealed and every other one was delivered; 2 when messages remain in the outbox (pending or\n"
            "refused), when no input could be read, or on a usage error."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument("inputs", nargs="*", metavar="IN", help="images to send: DICOM, PNG, JPEG or TIFF")
    send.add_argument("--to", required=True, metavar="URL", help="receiver URL, e.g. https://host:8443 (path /v1/messages is added)")
    send.add_argument("--recipient", metavar="RECEIVER.pub", help="the receiver's public key")
    send.add_argument("--sign", metavar="DEVICE.key", help="this device's signing key")
    send.add_argument("--passphrase-file", metavar="FILE", help="file holding the device key's passphrase")
    send.add_argument("--outbox", default=DEFAULT_OUTBOX, metavar="DIR", help=f"outbox folder (default: {DEFAULT_OUTBOX})")
    send.add_argument("--quality", type=int, help=quality_help())
    send.add_argument("--flush", action="store_true", help="only deliver messages already in the outbox")
    send.add_argument("--again", action="store_true", help="seal and send inputs even if they were sent before")
    send.add_argument("--retries", type=int, default=10, help="attempts per message before giving up for now (default: 10)")
    send.add_argument("--backoff", type=float, default=0.5, metavar="S", help="first retry delay scale in seconds (default: 0.5)")
    send.add_argument("--timeout", type=float, default=60.0, metavar="S", help="HTTP timeout per attempt (default: 60)")
    send.add_argument("--cacert", metavar="PEM", help="CA bundle to verify the receiver's TLS certificate")
    send.add_argument("--retain-delivered", type=_duration, default=_duration(DEFAULT_RETAIN_DELIVERED),
                      metavar="DURATION",
                      help="keep the record of a delivered message (receipt, diagnosis; used to skip an input "
                           f"sent before) this long, then purge it: 0, or a number with s, m, h or d "
                           f"(default: {DEFAULT_RETAIN_DELIVERED})")
    send.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    send.set_defaults(func=_send)

    gateway = sub.add_parser(
        "gateway",
        help="a DICOM Storage SCP: seal what modalities send with C-STORE, deliver it like 'send'",
        description=(
            "Listen for DICOM associations (C-STORE of projection radiographs: CR, DX, MG, IO, XA, RF, "
            "Secondary Capture; C-ECHO). Each instance is read, compressed, sealed for the receiver and "
            "committed to the outbox (SQLite, fsync'd) before the C-STORE is answered Success; the outbox "
            "is delivered in the background as 'radseal send' does. An instance that cannot be read or "
            "does not match its request gets a failure status with an Error Comment. An instance sent "
            "again (same bytes) is answered Success once more and delivered once. After a crash, "
            "restarting the gateway resumes delivery from the outbox."
        ),
        epilog=(
            "examples:\n"
            "  radseal gateway --ae-title RADSEAL --port 11112 --to https://gw.hospital.example:8443 \\\n"
            "      --recipient receiver.pub --sign device.key --outbox /var/lib/radseal/outbox \\\n"
            "      --host 0.0.0.0 --allow-ae CR_ROOM1 --allow-ae DX_ROOM2\n"
            "  echoscu -aec RADSEAL -aet CR_ROOM1 gateway-host 11112          # dcmtk: C-ECHO\n"
            "  storescu -aec RADSEAL -aet CR_ROOM1 gateway-host 11112 img.dcm # dcmtk: C-STORE\n"
            "failure statuses: 0xA900 data set does not match the request's SOP Class/Instance UID;\n"
            "0xC000 not a readable grayscale image; 0xA700 the outbox cannot be written."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gateway.add_argument("--ae-title", type=_ae_title, default=DEFAULT_AE_TITLE,
                         help=f"this gateway's AE title; a different called AE title is rejected (default: {DEFAULT_AE_TITLE})")
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    gateway.add_argument("--port", type=_port, default=DEFAULT_DICOM_PORT,
                         help=f"DICOM port (default: {DEFAULT_DICOM_PORT}; 0 picks a free one)")
    gateway.add_argument("--allow-ae", action="append", type=_ae_title, metavar="AE",
                         help="a calling AE title to accept (repeat); others are rejected at association "
                              "(default: any calling AE title)")
    gateway.add_argument("--to", required=True, metavar="URL", help="receiver URL, e.g. https://host:8443")
    gateway.add_argument("--recipient", required=True, metavar="RECEIVER.pub", help="the receiver's public key")
    gateway.add_argument("--sign", required=True, metavar="DEVICE.key", help="this device's signing key")
    gateway.add_argument("--passphrase-file", metavar="FILE", help="file holding the device key's passphrase")
    gateway.add_argument("--outbox", default=DEFAULT_OUTBOX, metavar="DIR", help=f"outbox folder (default: {DEFAULT_OUTBOX})")
    gateway.add_argument("--quality", type=int, help=quality_help())
    gateway.add_argument("--backoff", type=float, default=0.5, metavar="S", help="first retry delay scale in seconds (default: 0.5)")
    gateway.add_argument("--timeout", type=float, default=60.0, metavar="S", help="HTTP timeout per attempt (default: 60)")
    gateway.add_argument("--cacert", metavar="PEM", help="CA bundle to verify the receiver's TLS certificate")
    gateway.add_argument("--retain-delivered", type=_duration, default=_duration(DEFAULT_RETAIN_DELIVERED),
                         metavar="DURATION",
                         help="keep the record of a delivered message (used to recognise an instance sent again) "
                              f"this long: 0, or a number with s, m, h or d (default: {DEFAULT_RETAIN_DELIVERED})")
    gateway.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                         help=f"largest image taken, width x height, checked before decoding (default: {DEFAULT_MAX_PIXELS})")
    gateway.set_defaults(func=_gateway)

    outbox = sub.add_parser(
        "outbox",
        help="show the sender's outbox, put refused messages back, purge delivered records",
        description=(
            "The outbox keeps every sealed message until a matching receipt comes back. 'status' lists "
            "pending messages and refused ones with the receiver's status, error code and reason; "
            "'retry' puts refused messages back to pending after the cause was fixed (the device key "
            "added to the receiver's --trust, the receiver upgraded, ...); 'purge' drops the records of "
            "delivered messages older than --retain-delivered. Messages are named by message id and by "
            "the first hex digits of their input file's SHA-256 (what sha256sum prints): the outbox "
            "keeps no file names."
        ),
        epilog=(
            "examples:\n"
            "  radseal outbox status --outbox /var/lib/radseal/outbox\n"
            "  radseal outbox retry --all --outbox /var/lib/radseal/outbox && radseal send --flush --to URL --outbox ...\n"
            "  radseal outbox purge --retain-delivered 0\n"
            "a message refused with 409 conflict holds a message id another message took at the receiver;\n"
            "retrying it gets the same answer: send its input again with 'radseal send FILE --again'\n"
            "(a new message id) and have the receiver's log line for the conflict looked into."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    actions.required = True
    status = actions.add_parser("status", help="counts, pending and refused messages")
    status.add_argument("--all", action="store_true", help="also list the delivered records kept")
    retry = actions.add_parser("retry", help="put refused messages back to pending")
    retry.add_argument("message_ids", nargs="*", metavar="MESSAGE_ID", help="refused messages to put back")
    retry.add_argument("--all", action="store_true", help="every refused message")
    purge = actions.add_parser("purge", help="drop delivered records older than --retain-delivered")
    purge.add_argument("--retain-delivered", type=_duration, default=_duration(DEFAULT_RETAIN_DELIVERED),
                       metavar="DURATION", help=f"0, or a number with s, m, h or d (default: {DEFAULT_RETAIN_DELIVERED})")
    for action, func in ((status, _outbox_status), (retry, _outbox_retry), (purge, _outbox_purge)):
        action.add_argument("--outbox", default=DEFAULT_OUTBOX, metavar="DIR", help=f"outbox folder (default: {DEFAULT_OUTBOX})")
        action.set_defaults(func=func)
