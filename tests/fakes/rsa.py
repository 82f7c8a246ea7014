"""Throwaway RSA keys for tests, made in pure Python (no dependency).

Used to build a fake service-account JSON whose JWTs the fake token endpoint
verifies. 1,024-bit keys keep generation fast; they protect nothing.
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass

_SMALL_PRIMES = [p for p in range(3, 2000, 2) if all(p % q for q in range(3, int(p**0.5) + 1, 2))]
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _probable_prime(n: int, rng: random.Random, rounds: int = 24) -> bool:
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        a = rng.randrange(2, n - 2)
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rng: random.Random) -> int:
    while True:
        c = rng.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if _probable_prime(c, rng):
            return c


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _der_int(v: int) -> bytes:
    b = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return _der(0x02, b)


@dataclass
class RsaKey:
    n: int
    e: int
    d: int
    p: int
    q: int

    def private_pem(self) -> str:
        """PKCS#8 PEM, as in a Google service-account JSON file."""
        dp, dq, qinv = self.d % (self.p - 1), self.d % (self.q - 1), pow(self.q, -1, self.p)
        pkcs1 = _der(
            0x30,
            b"".join(
                _der_int(v) for v in (0, self.n, self.e, self.d, self.p, self.q, dp, dq, qinv)
            ),
        )
        alg = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + _der(0x05, b""))
        pkcs8 = _der(0x30, _der_int(0) + alg + _der(0x04, pkcs1))
        b64 = base64.b64encode(pkcs8).decode()
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        return "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"

    def verify_rs256(self, message: bytes, signature: bytes) -> bool:
        k = (self.n.bit_length() + 7) // 8
        if len(signature) != k:
            return False
        em = pow(int.from_bytes(signature, "big"), self.e, self.n).to_bytes(k, "big")
        t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        return em == b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def generate(bits: int = 1024, seed: int | None = None) -> RsaKey:
    rng = random.Random(seed)
    e = 65537
    while True:
        p, q = _prime(bits // 2, rng), _prime(bits // 2, rng)
        if p == q:
            continue
        phi = (p - 1) * (q - 1)
        try:
            d = pow(e, -1, phi)
        except ValueError:
            continue
        return RsaKey(n=p * q, e=e, d=d, p=p, q=q)
