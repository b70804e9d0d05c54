"""Password hashes: argon2id only, at or above OWASP's minimum parameters; and which
passwords may be set at all.

Used by the manifest rules (User.password_hash), `obreconcile hash-password` and the API's
login. Seed-style salted SHA-1 hashes are recognised so that the error can say why they
are refused. A new password (hash-password, POST /user, a password change) has 8 to 1024
characters and is not one of the 30,000 most common passwords of breach corpora, the list
zxcvbn ships (OWASP ASVS 2.1.1 and 2.1.7); compared ignoring case.
"""

from __future__ import annotations

import re
from functools import cache

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP Password Storage Cheat Sheet, argon2id: (memory KiB, iterations) pairs, parallelism 1.
OWASP_MINIMUMS = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))

_HASHER = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, type=Type.ID)
_SHA1_STYLES = (
    re.compile(r"^[0-9a-fA-F]{40}$"),  # bare hex digest
    re.compile(r"^(?:\{S?SHA\}|sha1?\$)", re.IGNORECASE),  # {SSHA}..., sha1$salt$digest
    re.compile(r"^[^$]{1,64}\$[0-9a-fA-F]{40}$"),  # salt$digest
)


MIN_LENGTH, MAX_LENGTH = 8, 1024


def new_password_problem(password: str) -> str:
    """Why ``password`` may not become a user's password, or '' when it may."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters (this one has {len(password)})"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters (this one has {len(password)})"
    if password.lower() in common_passwords():
        return "this password is one of the 30,000 most common in breaches (zxcvbn's list): choose another"
    return ""


@cache
def common_passwords() -> frozenset[str]:
    """zxcvbn's list of common passwords, lower case (imported on first use: about 70 ms)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (t=3, m=64 MiB, p=4)."""
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches ``password_hash``; False for any mismatch or bad hash."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_hash_problem(password_hash: str) -> str:
    """Why ``password_hash`` is not acceptable, or '' when it is."""
    remedy = "make one with 'obreconcile hash-password'"
    if any(p.search(password_hash) for p in _SHA1_STYLES):
        return f"seed-style salted SHA-1 hashes are refused as too weak: use argon2id ({remedy})"
    if not password_hash.startswith("$argon2id$"):
        return f"not an argon2id hash ({remedy})"
    try:
        params = extract_parameters(password_hash)
    except InvalidHashError:
        return f"not a well-formed argon2id hash ({remedy})"
    if not any(params.memory_cost >= m and params.time_cost >= t for m, t in OWASP_MINIMUMS):
        return (
            f"argon2id parameters m={params.memory_cost},t={params.time_cost} are below OWASP's minimum "
            f"(e.g. m=19456,t=2 or m=47104,t=1; {remedy})"
        )
    return ""
