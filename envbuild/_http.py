"""The one HTTP session every stage uses: connect and read timeouts and a small retry policy.

An index that is unreachable, or accepts connections and never answers, fails a request within
``CONNECT_TIMEOUT * (CONNECT_RETRIES + 1)`` or ``READ_TIMEOUT`` seconds (both under 10 s) instead of
hanging; refused connections and 429/5xx answers are retried a few times with a short backoff,
for flaky links.  The read timeout is the longest silence allowed between two reads, not a limit
on a download's length.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONNECT_RETRIES", "CONNECT_TIMEOUT", "READ_TIMEOUT", "TIMEOUT", "http_session", "is_timeout"]

CONNECT_TIMEOUT = 3.0
CONNECT_RETRIES = 1
READ_TIMEOUT = 6.0
TIMEOUT = (CONNECT_TIMEOUT, READ_TIMEOUT)


def http_session(pool: int = 4, user_agent: str = "envbuild") -> Any:
    """A ``requests.Session`` with the retry policy mounted for http and https."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    s = requests.Session()
    # read=0: a server that accepted the connection and then said nothing is not asked again (that
    # would multiply the wait); status retries are for answers that say "try again".
    retry = Retry(total=4, connect=CONNECT_RETRIES, read=0, status=3, other=0, backoff_factor=0.25,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET", "HEAD"),
                  raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=max(4, pool), pool_maxsize=max(4, pool))
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    s.headers["User-Agent"] = user_agent
    return s


def is_timeout(exc: BaseException) -> bool:
    """True when ``exc`` (a requests/urllib3 error, possibly wrapped) is a connect or read timeout."""
    import requests
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, requests.Timeout | Urllib3Timeout):
            return True
        reason = getattr(e, "reason", None)
        if isinstance(reason, BaseException):
            e = reason
            continue
        args = getattr(e, "args", ())
        e = next((a for a in args if isinstance(a, BaseException)), None) or e.__cause__ or e.__context__
    return False
