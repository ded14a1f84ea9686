"""The per-run bearer token of the management API: reading the token file, checking a header.

Owns only the token rules (file mode 0600 or stricter, stripped content, constant-time
comparison). Who asks for a token and what a refusal looks like belongs to api.py / client.py.
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

from nodes.errors import AuthError

MIN_TOKEN_CHARS = 16
_OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO


def read_token_file(path: Path) -> str:
    """The stripped content of `path`; AuthError when group/others may read or write it, when it
    is not a regular file, or when the token is shorter than MIN_TOKEN_CHARS characters.

    Example:
        token = read_token_file(Path("run/token"))   # a file made with mode 0600
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise AuthError(f"token file {str(path)!r}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AuthError(f"token file {str(path)!r}: not a regular file")
    if st.st_mode & _OPEN_BITS:
        raise AuthError(f"token file {str(path)!r}: mode {stat.S_IMODE(st.st_mode):04o}, "
                        "expected 0600 or stricter (no group or other access)")
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"token file {str(path)!r}: unreadable: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise AuthError(f"token file {str(path)!r}: a token of {len(token)} characters, "
                        f"expected at least {MIN_TOKEN_CHARS} without whitespace")
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """True when an `Authorization` header value is exactly `Bearer <token>` (constant time)."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def bearer_header(token: str | None) -> dict[str, str]:
    """The request header carrying `token`; empty without one."""
    return {"Authorization": f"Bearer {token}"} if token else {}
