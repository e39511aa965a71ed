# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""Keep secrets out of logs: a logging filter that redacts tokens before any handler sees a record.

With debug logging on, the ``websockets`` library logs every handshake line, including the request path
(``GET /?token=...``) and the ``Authorization`` header, on both sides. :func:`install` puts a :class:`RedactFilter`
on the ``websockets`` loggers and on ours; it rewrites a record's message (and a formatted traceback) so that

- query values of ``token``, ``access_token``, ``api_key``/``api-key`` become ``***``;
- the value of an ``Authorization``, ``Proxy-Authorization``, ``Api-Key``, ``X-Api-Key`` or ``Cookie`` header
  (``Bearer``/``Api-Key``/``Basic``/``Token`` scheme kept) becomes ``***``
  (the placeholder ``<token>`` of a help text is left alone);
- any secret registered with :func:`install` (``secrets=``, e.g. the server's token) becomes ``***`` wherever it
  appears.

A logger's filters apply only to records created on that very logger (not to records propagated from its
children), so the filter goes on each logger by name (:data:`LOGGERS`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "***"

#: Loggers that get the filter: the websockets library's (handshake lines) and ours.
LOGGERS: tuple[str, ...] = (
    "websockets",
    "websockets.server",
    "websockets.client",
    "asyncio",
    "cosmos3_ros",
    "cosmos3_ros.sidecar",
    "cosmos3_ros.sidecar.server",
    "cosmos3_ros.sidecar.client",
    "cosmos3_ros.sidecar.limits",
    "cosmos3_ros.commands.sidecar",
    "cosmos3_ros.backends",
)

#: ``<token>`` as a whole value: a placeholder in a help text, not a secret.
_PLACEHOLDER = r"<token>(?:[\s'\",;&#]|$)"
_QUERY = re.compile(rf"(?i)(?<![a-z0-9_])((?:access_)?token|api[-_]?key)=(?!{_PLACEHOLDER})[^&\s#'\"]+")
_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|cookie)(['\"]?\s*[:=]\s*['\"]?)"
    rf"(?!(?:(?:bearer|api-key|basic|token)\s+)?{_PLACEHOLDER})((?:bearer|api-key|basic|token)\s+)?[^\s'\",;]+"
)
#: A registered secret shorter than this is not replaced literally (it would mangle ordinary words).
MIN_LITERAL = 6


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with token query values, credential header values and the given ``secrets`` masked."""
    for secret in secrets:
        if len(secret) >= MIN_LITERAL and secret in text:
            text = text.replace(secret, MASK)
    text = _QUERY.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}{MASK}", text)


class RedactFilter(logging.Filter):
    """Rewrites each record it sees so that no secret reaches a handler; never drops a record."""

    def __init__(self) -> None:
        super().__init__("cosmos3_ros.redact")
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


_FILTER = RedactFilter()
_LOCK = threading.Lock()


def install(secrets: Iterable[str | None] = (), loggers: Iterable[str] = LOGGERS) -> RedactFilter:
    """Put the (one, shared) redaction filter on ``loggers`` and register ``secrets``; idempotent."""
    with _LOCK:
        _FILTER.secrets.update(s for s in secrets if s)
        for name in loggers:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
    return _FILTER
