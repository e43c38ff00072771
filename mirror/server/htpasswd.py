"""The ``[serve] auth-file``: one ``user:hash`` per line, as ``htpasswd -nbB`` prints them.

Blank lines and lines starting with ``#`` are skipped. A hash is bcrypt (``$2b$``, ``$2y$``,
``$2a$``) or argon2id (``$argon2id$``), checked with the ``bcrypt`` and ``argon2-cffi``
libraries. Anything else — a line without ``:``, another scheme (``$apr1$``, ``{SHA}``,
plain text), a malformed hash, a user listed twice — makes the whole file refused with
one line naming ``file:line`` and the fix; a hash is never repeated in a message (it may
be a password written by mistake).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from mirror.errors import MirrorError

#: What a refused line should look like: the command that prints one.
MAKE_HASH = "htpasswd -nbB USER PASSWORD"
#: bcrypt reads at most this many bytes of a password (longer ones are cut, as htpasswd does).
BCRYPT_MAX_PASSWORD = 72
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_ARGON2ID = "$argon2id$"


class AuthFileError(MirrorError):
    """The auth file cannot be used; the message is one line: where, what, the fix."""


class Scheme(enum.Enum):
    BCRYPT = "bcrypt"
    ARGON2ID = "argon2id"


@dataclass(frozen=True)
class Entry:
    user: str
    scheme: Scheme
    hash: str
    line: int


#: The users of one reading of the file, by name.
Table = dict[str, Entry]


def scheme_of(hashed: str) -> Scheme | None:
    if hashed.startswith(("$2b$", "$2y$", "$2a$")):
        return Scheme.BCRYPT
    if hashed.startswith(_ARGON2ID):
        return Scheme.ARGON2ID
    return None


def _well_formed(scheme: Scheme, hashed: str) -> bool:
    if scheme is Scheme.BCRYPT:
        return _BCRYPT.fullmatch(hashed) is not None
    from argon2 import Type, extract_parameters
    from argon2.exceptions import InvalidHashError

    try:
        return extract_parameters(hashed).type is Type.ID
    except (InvalidHashError, ValueError):
        return False


def parse(text: str, where: str) -> Table:
    """The table of ``text``, the contents of the file named ``where``."""
    table: Table = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        at = f"{where}:{number}"
        user, sep, hashed = line.partition(":")
        user, hashed = user.strip(), hashed.strip()
        if not sep or not user or not hashed:
            raise AuthFileError(
                f'{at}: expected "user:hash"; write the line as `{MAKE_HASH}` prints it, '
                "or remove it"
            )
        scheme = scheme_of(hashed)
        if scheme is None:
            raise AuthFileError(
                f'{at}: the hash of user "{user}" is neither bcrypt ($2b$, $2y$, $2a$) nor '
                f"argon2id ($argon2id$); make one with `{MAKE_HASH}`"
            )
        if not _well_formed(scheme, hashed):
            raise AuthFileError(
                f'{at}: the {scheme.value} hash of user "{user}" is malformed (cut short or '
                f"edited?); make it again with `{MAKE_HASH}`"
            )
        first = table.get(user)
        if first is not None:
            raise AuthFileError(
                f'{at}: user "{user}" is listed again (first on line {first.line}); keep '
                "one of the two lines"
            )
        table[user] = Entry(user, scheme, hashed, number)
    return table


def load(path: Path) -> Table:
    """The table of the file at ``path`` (blocking: call it off the event loop)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            fix = "create it, or correct [serve] auth-file"
        elif isinstance(exc, PermissionError):
            fix = "make it readable by the user the mirror runs as"
        else:
            fix = "check [serve] auth-file"
        raise AuthFileError(
            f"cannot read the auth file {path} ([serve] auth-file): {exc.strerror or exc}; {fix}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise AuthFileError(
            f"{path}: not UTF-8 text (byte {exc.start}); write user names in UTF-8"
        ) from exc
    return parse(text, str(path))


def verify(entry: Entry, password: bytes) -> bool:
    """Whether ``password`` is the one ``entry`` was made from (blocking: 50-250 ms by
    design; run it off the event loop)."""
    if entry.scheme is Scheme.BCRYPT:
        import bcrypt

        try:
            return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], entry.hash.encode("ascii"))
        except ValueError:  # checked when loaded; kept as a refusal, never a 500
            return False
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(entry.hash, password)
    except (VerificationError, InvalidHashError):  # a mismatch, or a hash checked on load
        return False
