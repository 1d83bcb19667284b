"""Secrets out of what is written: a URL's credentials and secret query values are redacted.

A base URL may carry a key (`http://user:secret@host/v1`, `...?api-key=...`); specs, settings
and experiment metadata that name it are stored and uploaded, so they name it redacted.
"""

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "pwd", "auth", "sig", "credential")


def _secret(name: str) -> bool:
    name = name.lower().replace("-", "_")
    return any(word in name for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """`url` with its user info and the values of secret-looking query parameters redacted."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if _secret(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
