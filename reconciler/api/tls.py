"""HTTPS for ``serve --tls-cert FILE --tls-key FILE``: a server-side ssl context."""

from __future__ import annotations

import ssl
from pathlib import Path

from reconciler.errors import ObreconcileError


def ssl_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later, Python's default ciphers, the certificate chain loaded.

    Raises ObreconcileError naming the file when the certificate or key cannot be used.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as e:
        raise ObreconcileError(f"TLS: cannot read {e.filename}: no such file") from e
    except (ssl.SSLError, OSError) as e:
        raise ObreconcileError(f"TLS: cannot use certificate {cert} with key {key}: {e}") from e
    return context
