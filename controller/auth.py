"""The controller API's bearer token: reading the token file, checking a request header.

The same rules as the node agent's (nodes/auth.py; the packages do not import each other): the
file's mode is 0600 or stricter, the token is its stripped content (16+ characters, no spaces),
headers compare in constant time.
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

from controller.errors import ControllerAuthError

MIN_TOKEN_CHARS = 16


def read_token_file(path: Path) -> str:
    """The stripped token in `path`; ControllerAuthError when group/others have any access, the
    file is not a regular file, or the token is too short."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ControllerAuthError(f"token file {str(path)!r}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ControllerAuthError(f"token file {str(path)!r}: not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ControllerAuthError(f"token file {str(path)!r}: mode "
                                  f"{stat.S_IMODE(st.st_mode):04o}, expected 0600 or stricter "
                                  "(no group or other access)")
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ControllerAuthError(f"token file {str(path)!r}: unreadable: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ControllerAuthError(f"token file {str(path)!r}: a token of {len(token)} "
                                  f"characters, expected at least {MIN_TOKEN_CHARS} without "
                                  "whitespace")
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """True when an `Authorization` header value is `Bearer <token>` (constant time)."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                              token.encode())
