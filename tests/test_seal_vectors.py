"""Fixed example containers (also in docs/format.md) and an independent RFC 9180 opener.

The X25519 vector is opened twice: by radseal, and by a from-the-spec
implementation below that uses only HMAC, HKDF-Expand, X25519, Ed25519 and
ChaCha20-Poly1305 primitives, following docs/format.md and RFC 9180. That is
the "second implementation" check of the format document.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from radseal.seal import open_sealed
from radseal.seal.keys import DeviceKey, ReceiverKey

RECEIVER_X25519_SK = bytes(range(1, 33))
DEVICE_ED25519_SK = bytes(range(101, 133))
HYBRID_MLKEM_SEED = bytes(range(64))
HYBRID_X25519_SK = bytes(range(33, 65))
BODY = b"hello radseal"
VECTOR_X25519 = bytes.fromhex(
    "8952534c0d0a1a0a010100007fd231dbf3a7a08aebdb8cd7db8c821baff3346a0c971f8898060259b6dee4f4"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf000000006955b9000000003da704439baf69d2770251beff310fd4ef"
    "214ce0bfc0ee8ce93f347b5bbf43ae7ae96ba6a16a9d71e047e9935cadfc36838cc23b879e79cc2f4fc8bec8"
    "9871514ebbe6e106a79445306d0e1b45b7009dc68524c3d577c44b1ec8f4717d8a6003a8f8439ea647511673"
    "b55b6b5ad1691f6be2aa373f5684c66b200f06180a"
)
VECTOR_HYBRID = bytes.fromhex("8952534c0d0a1a0a0102000044b9fd678a519e4c20a45b8cdf7243b8aff3346a0c971f8898060259b6dee4f4a0a1a2a3a4a5a6a7a8a9aaabacadaeaf000000006955b9000000047d32706be6eb81bf5382d5a89601dedf6c8df1c52432251b09cbe699f7bc1f641ad84aa0cf116e84c6f779fb329e865317983f6620eb4415a4eb1c91102e894f5ab1b03b596c259d4fafdb0947fefc23c09294801f6dca3266f4d840219efa77c170088851ea19b7d6b3b93d8ce1ccedd476f1845981643e63a6a3f603727547c9c2f0a4d3161c4aab73c75f687a612372d97830b329c72277eb984a3d987292a495f96f79810f80504d695253445e346fc3070a42dc65458d2dfc4ee1fc538c8dd2f1a429d20f0a0fbce1e750d3dbb8451218cc6d1cd5577a8fa8248fd9f62e79a2faf481da223fe326d249938435803355c05386e099504c276782bbd456eb22f93ee7d87d1f818b0989558e0b4759815f0ba9ef0e2ade09a9690617e13832a9e15048073c3dbed2910199f602b877af7a157d13bd408d9eb0256d6ea0a68a20bc71d3e55f0ea6b5cbcb92e8bd61ba3b064b58fab94424ac1aa72479a8597b458e0728cebd43d1b4969bf8537413c294a224d49f4ab0c71dc70e905a96a8af7f13373b089a277dfe86440323c147011791541292fce41dacd3b26ba328069ca582f7765125e6d2ae46edd51c06cc479a037da198fb1e61f198f9757cffe54407cbb281ea758ce9b5703d9cbeda6aaff23ce7fba8af9cb63b8f5e3273c39d09f5c2990edefdf4be51c32c0bc6dc2182a1a573d97c802bce3424bd341f9360e78387e744ce9fc0f26cf50023833c93ea7b0190c707bd507a31951d4983bc4689076052e066d849aae3177f0cf075bc930f5d45a9abab7199cc67cefc5d03226315424e17350e279e21076bfb3813476077325bd9a78989181af914855b052ca39521908a7c258ed36de2aec5bd1204527e8a4898bf086c1ccbb7b3a18f787437508e1d997914d9574f1b878fe29a4e2407a761eba26daf1914464c49afc47ba9b3e65459a8c99b08e00f12321998bccdccbcd840e296b4ae471d0bc6b5fdef2a6927c72ed008deacf412152729ce04e7c70b30b63321bf3eccb99b1e33af97a52313c765efc35b665232e0378e722521d6648725c7a2c24a91ecfee415abcb0e3c362575408d00edf2dc209636a41187d28318be1c1088c9a017d797ab525c6f2426a4e9576420a78defd7adc0cd1b160e6a49ebe7f817768a2a81d2c050e48a4aa7594f3393a56c426c90a178b4ba057a49d7c4552e3c9806d24cd8a72a0d1aa6d3b6120a26b40f576505740b7eddbd5d3e5c774f250efe3dac0a4dc06756b2988bef93ffdd066388d57ba7aeb6e4ed574051725921dc1e544d02b826ae29a79e1e6b1f8db4817dfd1b6090e29c81c99b8e0d0988334eecdef3b1210a46049c214978e2b453d625368d54e800556c8cd4cc74bcaf9ea5cc54799ce39e7aea25a69379a98171cbc614c81b1ad64f3ce45753b2865291fb7edb22c5dc88d960beeeba2bb6dd2e1ed95b96908a2c83b179c261519a0241d51872f9c3f2f2749b6d1d95e23baf4862dc6990537396d6979ac4e0f44f23caa7fb324d700ed84e14576addc0b5e2488d5a2ed85ada501045be7aec4cb21288d0b249b048e6ba043ff0512d01499fcf31da1c3361f6bd0a8394300dbd2cba59d8912ba79a4ab349743ea3f295134f0402b0a3f526aa15d8ad5705f2f4dc8809381c38f6deeb914a07779645065a3442c9fd4d3950964b772dbad4710998c2c9097c0bb843c2f70e")


def _device() -> DeviceKey:
    return DeviceKey(ed25519.Ed25519PrivateKey.from_private_bytes(DEVICE_ED25519_SK))


def test_x25519_vector_opens():
    receiver = ReceiverKey("x25519", (x25519.X25519PrivateKey.from_private_bytes(RECEIVER_X25519_SK),))
    assert receiver.key_id == "7fd231dbf3a7a08aebdb8cd7db8c821b"
    assert _device().key_id == "aff3346a0c971f8898060259b6dee4f4"
    opened = open_sealed(VECTOR_X25519, receiver, [_device().public_key()])
    assert opened.body == BODY
    assert opened.header.message_id == bytes(range(0xA0, 0xB0)).hex() and opened.header.created == 1767225600


def test_hybrid_vector_opens():
    receiver = ReceiverKey("mlkem768-x25519", (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(HYBRID_MLKEM_SEED),
        x25519.X25519PrivateKey.from_private_bytes(HYBRID_X25519_SK),
    ))
    assert receiver.key_id == "44b9fd678a519e4c20a45b8cdf7243b8"
    assert open_sealed(VECTOR_HYBRID, receiver, [_device().public_key()]).body == BODY


# ----------------------------------------------------------------- independent opener (RFC 9180 by hand)

def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite_id + label + info, length)


def independent_open(data: bytes, sk_r: bytes, device_pk: bytes) -> bytes:
    header, n = data[:72], struct.unpack(">I", data[68:72])[0]
    assert data[:8] == b"\x89RSL\r\n\x1a\n" and data[8] == 1 and data[9] == 1 and len(data) == 72 + n + 64
    ciphertext, signature = data[72 : 72 + n], data[72 + n :]
    ed25519.Ed25519PublicKey.from_public_bytes(device_pk).verify(signature, data[: 72 + n])
    key_id = hashlib.sha256(b"radseal key id v1: ed25519\x00" + device_pk).digest()[:16]
    assert data[28:44] == key_id
    enc, ct = ciphertext[:32], ciphertext[32:]
    # DHKEM(X25519, HKDF-SHA256) Decap, RFC 9180 section 4.1
    kem_suite = b"KEM" + struct.pack(">H", 0x0020)
    sk = x25519.X25519PrivateKey.from_private_bytes(sk_r)
    dh = sk.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
    pk_rm = sk.public_key().public_bytes_raw()
    eae_prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    shared_secret = _labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + pk_rm, 32)
    # KeySchedule, mode_base, info = the 72-byte header (section 5.1)
    suite = b"HPKE" + struct.pack(">HHH", 0x0020, 0x0001, 0x0003)
    psk_id_hash = _labeled_extract(suite, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite, b"", b"info_hash", header)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(suite, shared_secret, b"secret", b"")
    key = _labeled_expand(suite, secret, b"key", context, 32)
    base_nonce = _labeled_expand(suite, secret, b"base_nonce", context, 12)
    return ChaCha20Poly1305(key).decrypt(base_nonce, ct, b"")  # sequence 0, empty aad


def test_independent_implementation_opens_the_vector():
    device_pk = _device().public_key().raw
    assert independent_open(VECTOR_X25519, RECEIVER_X25519_SK, device_pk) == BODY


def independent_open_hybrid(data: bytes, mlkem_seed: bytes, sk_x: bytes) -> bytes:
    """MLKEM768-X25519 (X-Wing, HPKE KEM 0x647A): combiner by hand, then the same key schedule."""
    header, n = data[:72], struct.unpack(">I", data[68:72])[0]
    assert data[9] == 2
    ciphertext = data[72 : 72 + n]
    enc, ct = ciphertext[:1120], ciphertext[1120:]
    ct_m, ct_x = enc[:1088], enc[1088:]
    ss_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed).decapsulate(ct_m)
    sk = x25519.X25519PrivateKey.from_private_bytes(sk_x)
    ss_x = sk.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    pk_x = sk.public_key().public_bytes_raw()
    shared_secret = hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + b"\\.//^\\").digest()
    suite = b"HPKE" + struct.pack(">HHH", 0x647A, 0x0001, 0x0003)
    psk_id_hash = _labeled_extract(suite, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite, b"", b"info_hash", header)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(suite, shared_secret, b"secret", b"")
    key = _labeled_expand(suite, secret, b"key", context, 32)
    base_nonce = _labeled_expand(suite, secret, b"base_nonce", context, 12)
    return ChaCha20Poly1305(key).decrypt(base_nonce, ct, b"")


def test_independent_implementation_opens_the_hybrid_vector():
    assert independent_open_hybrid(VECTOR_HYBRID, HYBRID_MLKEM_SEED, HYBRID_X25519_SK) == BODY
