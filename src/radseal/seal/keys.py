"""Receiver and device keys, their fingerprints and their files.

Two kinds of key pair:

* a **receiver key** decrypts (HPKE KEM): ``x25519`` (DHKEM(X25519, HKDF-SHA256),
  RFC 9180) or ``mlkem768-x25519`` (the hybrid post-quantum KEM
  MLKEM768-X25519 a.k.a. X-Wing, HPKE KEM id 0x647A);
* a **device key** signs (Ed25519, RFC 8032).

Every key has a ``key_id``: the first 16 bytes of SHA-256 over a label naming
the algorithm and the raw public key, as 32 hex digits (see docs/format.md).

Files are PEM. Ed25519 and X25519 keys are single standard blocks (PKCS #8
``PRIVATE KEY`` / ``ENCRYPTED PRIVATE KEY``, SubjectPublicKeyInfo ``PUBLIC
KEY``), readable by OpenSSL. ``cryptography`` has no serialisation for the
hybrid key, so a hybrid key file holds its two components as two standard
blocks, ML-KEM-768 first and X25519 second, after one line of explanatory
text (RFC 7468 section 2 lets parsers skip text outside the blocks).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Union

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from radseal.io.files import atomic_write, read_regular_file
from radseal.seal.errors import KeyFileError

KEMS = ("x25519", "mlkem768-x25519")
KEY_ID_BYTES = 16
MAX_KEY_FILE_BYTES = 64 * 1024

# Domain-separation labels of the key-id hash: the same 32 bytes read as an
# X25519 and as an Ed25519 key get different ids.
_KEY_ID_LABELS = {
    "x25519": b"radseal key id v1: x25519\x00",
    "mlkem768-x25519": b"radseal key id v1: mlkem768-x25519\x00",
    "ed25519": b"radseal key id v1: ed25519\x00",
}
HYBRID_PRIVATE_TEXT = (
    "radseal receiver private key, KEM mlkem768-x25519 (HPKE KEM 0x647A): "
    "PKCS#8 ML-KEM-768 block, then PKCS#8 X25519 block\n"
)
HYBRID_PUBLIC_TEXT = (
    "radseal receiver public key, KEM mlkem768-x25519 (HPKE KEM 0x647A): "
    "SubjectPublicKeyInfo ML-KEM-768 block, then SubjectPublicKeyInfo X25519 block\n"
)
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


def compute_key_id(algorithm: str, raw_public: bytes) -> str:
    """The fingerprint of a public key: SHA-256(label || raw)[:16] as hex."""
    return hashlib.sha256(_KEY_ID_LABELS[algorithm] + raw_public).digest()[:KEY_ID_BYTES].hex()


def _spki_pem(pub) -> bytes:
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pkcs8_pem(priv, passphrase: bytes | None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True, eq=False)
class ReceiverPublicKey:
    """What a device needs to seal for a receiver."""

    kem: str
    _components: tuple = field(repr=False)  # (x25519,) or (mlkem768, x25519) public keys

    @property
    def raw(self) -> bytes:
        """The HPKE public key encoding (X-Wing order for the hybrid: ML-KEM then X25519)."""
        return b"".join(c.public_bytes_raw() for c in self._components)

    @cached_property
    def key_id(self) -> str:
        return compute_key_id(self.kem, self.raw)

    def hpke_public_key(self):
        if self.kem == "x25519":
            return self._components[0]
        return hpke.MLKEM768X25519PublicKey(*self._components)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReceiverPublicKey) and other.key_id == self.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return f"ReceiverPublicKey(kem={self.kem!r}, key_id={self.key_id!r})"


@dataclass(frozen=True, eq=False)
class ReceiverKey:
    """A receiver's private key; opens containers sealed for its public key."""

    kem: str
    _components: tuple = field(repr=False)  # (x25519,) or (mlkem768, x25519) private keys

    @classmethod
    def generate(cls, kem: str = "x25519") -> "ReceiverKey":
        if kem == "x25519":
            return cls(kem, (x25519.X25519PrivateKey.generate(),))
        if kem == "mlkem768-x25519":
            return cls(kem, (mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()))
        raise ValueError(f"unknown KEM {kem!r}; choose one of {', '.join(KEMS)}")

    def public_key(self) -> ReceiverPublicKey:
        return ReceiverPublicKey(self.kem, tuple(c.public_key() for c in self._components))

    @cached_property
    def key_id(self) -> str:
        return self.public_key().key_id

    def hpke_private_key(self):
        if self.kem == "x25519":
            return self._components[0]
        return hpke.MLKEM768X25519PrivateKey(*self._components)

    def __repr__(self) -> str:
        return f"ReceiverKey(kem={self.kem!r}, key_id={self.key_id!r})"


@dataclass(frozen=True, eq=False)
class DevicePublicKey:
    """A device's verification key; the receiver trusts a list of these."""

    _key: ed25519.Ed25519PublicKey = field(repr=False)

    @property
    def raw(self) -> bytes:
        return self._key.public_bytes_raw()

    @cached_property
    def key_id(self) -> str:
        return compute_key_id("ed25519", self.raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DevicePublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"DevicePublicKey(key_id={self.key_id!r})"


@dataclass(frozen=True, eq=False)
class DeviceKey:
    """A device's signing key (Ed25519)."""

    _key: ed25519.Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> "DeviceKey":
        return cls(ed25519.Ed25519PrivateKey.generate())

    def public_key(self) -> DevicePublicKey:
        return DevicePublicKey(self._key.public_key())

    @cached_property
    def key_id(self) -> str:
        return self.public_key().key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"DeviceKey(key_id={self.key_id!r})"


PrivateKey = Union[ReceiverKey, DeviceKey]
PublicKey = Union[ReceiverPublicKey, DevicePublicKey]


# --------------------------------------------------------------------------- encoding


def _as_bytes(passphrase: str | bytes | None) -> bytes | None:
    if passphrase is None:
        return None
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    if not passphrase:
        raise KeyFileError("the passphrase is empty")
    return passphrase


def private_key_pem(key: PrivateKey, passphrase: str | bytes | None = None) -> bytes:
    """The key file's bytes (see the module docstring for the layout)."""
    secret = _as_bytes(passphrase)
    if isinstance(key, DeviceKey):
        return _pkcs8_pem(key._key, secret)
    if isinstance(key, ReceiverKey):
        blocks = b"".join(_pkcs8_pem(c, secret) for c in key._components)
        return HYBRID_PRIVATE_TEXT.encode() + blocks if key.kem == "mlkem768-x25519" else blocks
    raise TypeError(f"not a radseal private key: {type(key).__name__}")


def public_key_pem(pub: PublicKey) -> bytes:
    if isinstance(pub, DevicePublicKey):
        return _spki_pem(pub._key)
    if isinstance(pub, ReceiverPublicKey):
        blocks = b"".join(_spki_pem(c) for c in pub._components)
        return HYBRID_PUBLIC_TEXT.encode() + blocks if pub.kem == "mlkem768-x25519" else blocks
    raise TypeError(f"not a radseal public key: {type(pub).__name__}")


def _blocks(data: bytes, where: str) -> list[bytes]:
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise KeyFileError(f"{where}: not a PEM key file (no -----BEGIN ...----- block)")
    return blocks


def _load_private_block(block: bytes, passphrase: bytes | None, where: str):
    encrypted = block.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    if encrypted and passphrase is None:
        raise KeyFileError(f"{where}: the private key is passphrase-protected; give its passphrase")
    if not encrypted and passphrase is not None:
        raise KeyFileError(f"{where}: the private key is not passphrase-protected, but a passphrase was given")
    try:
        return serialization.load_pem_private_key(block, password=passphrase)
    except ValueError:
        if encrypted:
            raise KeyFileError(f"{where}: wrong passphrase (or damaged key file)") from None
        raise KeyFileError(f"{where}: damaged or unsupported private key") from None
    except (TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{where}: damaged or unsupported private key") from None


def _load_public_block(block: bytes, where: str):
    try:
        return serialization.load_pem_public_key(block)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{where}: damaged or unsupported public key") from None


def parse_private_key(data: bytes, passphrase: str | bytes | None = None, where: str = "key") -> PrivateKey:
    secret = _as_bytes(passphrase)
    keys = [_load_private_block(b, secret, where) for b in _blocks(data, where)]
    kinds = tuple(type(k) for k in keys)
    if len(keys) == 1 and isinstance(keys[0], ed25519.Ed25519PrivateKey):
        return DeviceKey(keys[0])
    if len(keys) == 1 and isinstance(keys[0], x25519.X25519PrivateKey):
        return ReceiverKey("x25519", (keys[0],))
    if (
        len(keys) == 2
        and isinstance(keys[0], mlkem.MLKEM768PrivateKey)
        and isinstance(keys[1], x25519.X25519PrivateKey)
    ):
        return ReceiverKey("mlkem768-x25519", tuple(keys))
    names = ", ".join(k.__name__ for k in kinds)
    raise KeyFileError(f"{where}: holds {names}; expected an Ed25519, X25519 or ML-KEM-768 + X25519 private key")


def parse_public_key(data: bytes, where: str = "key") -> PublicKey:
    blocks = _blocks(data, where)
    if any(b.startswith((b"-----BEGIN PRIVATE KEY", b"-----BEGIN ENCRYPTED PRIVATE KEY")) for b in blocks):
        raise KeyFileError(f"{where}: is a private key; give the public key (.pub) here")
    keys = [_load_public_block(b, where) for b in blocks]
    if len(keys) == 1 and isinstance(keys[0], ed25519.Ed25519PublicKey):
        return DevicePublicKey(keys[0])
    if len(keys) == 1 and isinstance(keys[0], x25519.X25519PublicKey):
        return ReceiverPublicKey("x25519", (keys[0],))
    if (
        len(keys) == 2
        and isinstance(keys[0], mlkem.MLKEM768PublicKey)
        and isinstance(keys[1], x25519.X25519PublicKey)
    ):
        return ReceiverPublicKey("mlkem768-x25519", tuple(keys))
    names = ", ".join(type(k).__name__ for k in keys)
    raise KeyFileError(f"{where}: holds {names}; expected an Ed25519, X25519 or ML-KEM-768 + X25519 public key")


# --------------------------------------------------------------------------- files


def _read(path: str | Path) -> bytes:
    return read_regular_file(path, MAX_KEY_FILE_BYTES, "key file", KeyFileError)


def save_private_key(key: PrivateKey, path: str | Path, passphrase: str | bytes | None = None) -> Path:
    """Write a private key file with mode 0600, atomically; optionally passphrase-protected."""
    try:
        return atomic_write(path, private_key_pem(key, passphrase), mode=0o600)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file ({exc.strerror or exc})") from None


def save_public_key(pub: PublicKey, path: str | Path) -> Path:
    try:
        return atomic_write(path, public_key_pem(pub), mode=0o644)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file ({exc.strerror or exc})") from None


def load_private_key(path: str | Path, passphrase: str | bytes | None = None) -> PrivateKey:
    return parse_private_key(_read(path), passphrase, where=str(path))


def load_public_key(path: str | Path) -> PublicKey:
    return parse_public_key(_read(path), where=str(path))


def load_receiver_key(path: str | Path, passphrase: str | bytes | None = None) -> ReceiverKey:
    key = load_private_key(path, passphrase)
    if not isinstance(key, ReceiverKey):
        raise KeyFileError(f"{path}: is a device (signing) key, not a receiver key")
    return key


def load_device_key(path: str | Path, passphrase: str | bytes | None = None) -> DeviceKey:
    key = load_private_key(path, passphrase)
    if not isinstance(key, DeviceKey):
        raise KeyFileError(f"{path}: is a receiver key, not a device (signing) key")
    return key


def load_receiver_public_key(path: str | Path) -> ReceiverPublicKey:
    pub = load_public_key(path)
    if not isinstance(pub, ReceiverPublicKey):
        raise KeyFileError(f"{path}: is a device public key, not a receiver public key")
    return pub


def load_trusted(paths_or_dir: str | Path | Iterable[str | Path]) -> list[DevicePublicKey]:
    """Device public keys from files and folders (every ``*.pub`` in a folder).

    Duplicates are dropped. Receiver public keys inside a folder are skipped
    (key folders often hold both kinds), but one named explicitly is an error,
    and so is a folder without any device key: a typo never silently leaves a
    receiver trusting nobody.
    """
    if isinstance(paths_or_dir, (str, Path)):
        paths_or_dir = [paths_or_dir]
    found: dict[str, DevicePublicKey] = {}
    for entry in paths_or_dir:
        entry = Path(entry)
        if entry.is_dir():
            devices = [p for p in (load_public_key(f) for f in sorted(entry.glob("*.pub")))
                       if isinstance(p, DevicePublicKey)]
            if not devices:
                raise KeyFileError(f"{entry}: folder holds no device public keys (*.pub)")
        else:
            pub = load_public_key(entry)
            if not isinstance(pub, DevicePublicKey):
                raise KeyFileError(f"{entry}: is a receiver public key, not a device public key")
            devices = [pub]
        for pub in devices:
            found.setdefault(pub.key_id, pub)
    return list(found.values())
