"""Systematic mutations of sealed containers, for the fuzz test and the fuzz run.

Every mutation of a valid container must be rejected by :func:`open_sealed`
with one of the four specific errors; anything else (success, another
exception, a hang) is a defect. ``run_fuzz`` counts inputs and outcomes so
the results can be recorded (docs/results/seal_fuzz.md).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

from radseal.seal.errors import AuthenticationError, FormatError, UnknownSenderError, WrongRecipientError
from radseal.seal.format import HEADER_BYTES
from radseal.seal.keys import DeviceKey, ReceiverKey
from radseal.seal.sealing import open_sealed, seal

EXPECTED = (FormatError, AuthenticationError, UnknownSenderError, WrongRecipientError)


def byte_flips(data: bytes, masks: tuple[int, ...] = tuple(range(1, 256))) -> Iterator[tuple[str, bytes]]:
    """Each position XORed with each mask (all 255 masks = every other value of every byte)."""
    for i in range(len(data)):
        for m in masks:
            yield "byte flip", data[:i] + bytes([data[i] ^ m]) + data[i + 1 :]


def truncations(data: bytes) -> Iterator[tuple[str, bytes]]:
    for n in range(len(data)):
        yield "truncation", data[:n]


def appendings(data: bytes, rng: random.Random, extra: tuple[bytes, ...] = ()) -> Iterator[tuple[str, bytes]]:
    for n in (1, 2, 7, 64, 1000):
        yield "appended bytes", data + b"\x00" * n
        yield "appended bytes", data + rng.randbytes(n)
    for other in extra:
        yield "appended bytes", data + other


@dataclass
class FuzzReport:
    tried: Counter = field(default_factory=Counter)  # mutation kind -> inputs tried
    outcomes: Counter = field(default_factory=Counter)  # (kind, error name) -> count
    failures: list = field(default_factory=list)  # (kind, description)

    def add(self, other: "FuzzReport") -> None:
        self.tried.update(other.tried)
        self.outcomes.update(other.outcomes)
        self.failures.extend(other.failures)

    @property
    def total(self) -> int:
        return sum(self.tried.values())


def check(report: FuzzReport, kind: str, attempt: Callable[[], object], expect: tuple = EXPECTED) -> None:
    """Run one attempt; it must raise one of ``expect``."""
    report.tried[kind] += 1
    try:
        attempt()
    except expect as exc:
        report.outcomes[(kind, type(exc).__name__)] += 1
        return
    except Exception as exc:  # the defect this fuzzing looks for
        report.failures.append((kind, f"uncaught {type(exc).__name__}: {exc}"))
        return
    report.failures.append((kind, "accepted a mutated container"))


def fuzz_suite(kem: str, *, masks: tuple[int, ...], body_bytes: int = 200, seed: int = 0) -> FuzzReport:
    """Fuzz ``open_sealed`` on containers for a receiver key of ``kem``."""
    rng = random.Random(seed)
    receiver, other_receiver = ReceiverKey.generate(kem), ReceiverKey.generate(kem)
    device, other_device = DeviceKey.generate(), DeviceKey.generate()
    trusted = [device.public_key()]
    body_a, body_b = rng.randbytes(body_bytes), rng.randbytes(body_bytes)
    a = seal(body_a, receiver.public_key(), device)
    b = seal(body_b, receiver.public_key(), device)
    b_longer = seal(rng.randbytes(body_bytes + 1), receiver.public_key(), device)
    report = FuzzReport()

    def opener(data: bytes) -> Callable[[], object]:
        return lambda: open_sealed(data, receiver, trusted)

    for kind, data in (*byte_flips(a, masks), *truncations(a), *appendings(a, rng, (b,))):
        check(report, kind, opener(data))
    # Headers exchanged between two valid containers (same and different lengths).
    for x, y in ((a, b), (b, a), (a, b_longer), (b_longer, a)):
        check(report, "swapped headers", opener(x[:HEADER_BYTES] + y[HEADER_BYTES:]))
    # Ciphertext and signature exchanged.
    check(report, "swapped signatures", opener(a[:-64] + b[-64:]))
    # A valid container for another receiver.
    for_other = seal(body_a, other_receiver.public_key(), device)
    check(report, "other recipient", opener(for_other), (WrongRecipientError,))
    # A valid container from a device that is not trusted.
    untrusted = seal(body_a, receiver.public_key(), other_device)
    check(report, "untrusted sender", opener(untrusted), (UnknownSenderError,))
    # A trusted device re-signs a's ciphertext under a header of its own:
    # the signature verifies, the HPKE info binding must not.
    resigned = _resign_with_new_header(a, other_device)
    check(
        report,
        "ciphertext re-signed under a new header",
        lambda: open_sealed(resigned, receiver, [*trusted, other_device.public_key()]),
        (AuthenticationError,),
    )
    # Replay: the same valid container again opens again (replay detection is
    # the receiver's, by message id); count it as tried and check the id is stable.
    report.tried["replay (opens; same message id exposed)"] += 1
    first, second = open_sealed(a, receiver, trusted), open_sealed(a, receiver, trusted)
    if first.header.message_id != second.header.message_id or first.body != body_a:
        report.failures.append(("replay", "message id not stable across openings"))
    else:
        report.outcomes[("replay (opens; same message id exposed)", "opened, same message id")] += 1
    return report


def _resign_with_new_header(data: bytes, signer: DeviceKey) -> bytes:
    from radseal.seal.format import split

    parts = split(data)
    h = parts.header
    new = type(h)(h.version, h.suite_id, h.recipient_key_id, signer.key_id, h.message_id, h.created, h.ciphertext_length)
    signed = new.encode() + parts.ciphertext
    return signed + signer.sign(signed)
