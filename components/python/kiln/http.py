"""Outbound HTTP for Kiln scripts, shaped like `requests`:

    import kiln.http
    r = kiln.http.get("https://api.example.com/items", params={"q": "x"}, timeout=5)
    r.raise_for_status()
    return r.json()

The host sends each request under the script's egress allowlist and the
run's limits, follows redirects that stay within the allowlist, and answers
with the whole body. A request that gets no answer raises `HTTPError` (its
`kind`: denied, limit, timeout, network or invalid).
"""

import json as _json
import urllib.parse

from componentize_py_types import Err
from wit_world.imports import http as _host

__all__ = ["HTTPError", "Response", "request", "get", "post", "put", "patch", "delete", "head"]


class HTTPError(Exception):
    """A request that got no answer (`kind` says why), or an answer that
    `raise_for_status` refused (`kind` is "status", `response` is set)."""

    def __init__(self, message, kind, response=None):
        super().__init__(message)
        self.kind = kind
        self.response = response


class Headers(dict):
    """Header fields by lower-case name; repeated fields joined by ", "."""

    def __init__(self, pairs=()):
        super().__init__()
        for name, value in pairs:
            key = name.lower()
            super().__setitem__(key, f"{self[key]}, {value}" if key in self else value)

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def __contains__(self, name):
        return super().__contains__(name.lower())

    def get(self, name, default=None):
        return super().get(name.lower(), default)


class Response:
    """An answer, body read whole."""

    def __init__(self, status, url, headers, content):
        self.status_code = status
        self.url = url
        self.headers = Headers(headers)
        self.content = bytes(content)

    @property
    def status(self):
        return self.status_code

    @property
    def ok(self):
        return 200 <= self.status_code < 400

    @property
    def encoding(self):
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    @property
    def text(self):
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self):
        return _json.loads(self.content)

    def raise_for_status(self):
        if self.status_code >= 400:
            raise HTTPError(f"{self.status_code} for {self.url}", "status", self)

    def __repr__(self):
        return f"<Response [{self.status_code}]>"


_KINDS = {
    _host.ErrorKind.DENIED: "denied",
    _host.ErrorKind.LIMIT: "limit",
    _host.ErrorKind.TIMEOUT: "timeout",
    _host.ErrorKind.NETWORK: "network",
    _host.ErrorKind.INVALID: "invalid",
}


def request(method, url, *, params=None, headers=None, data=None, json=None, timeout=None):
    """Sends one request; `timeout` in seconds (the run's deadline applies anyway)."""
    if params:
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"{url}{'&' if '?' in url else '?'}{query}"
    fields = [(str(k), str(v)) for k, v in (headers or {}).items()]
    names = {k.lower() for k, _ in fields}
    if json is not None:
        body = _json.dumps(json).encode()
        if "content-type" not in names:
            fields.append(("content-type", "application/json"))
    elif isinstance(data, dict):
        body = urllib.parse.urlencode(data, doseq=True).encode()
        if "content-type" not in names:
            fields.append(("content-type", "application/x-www-form-urlencoded"))
    elif isinstance(data, str):
        body = data.encode()
    elif data is None:
        body = b""
    else:
        body = bytes(data)
    timeout_ms = None if timeout is None else max(0, min(int(timeout * 1000), 2**32 - 1))
    try:
        answer = _host.fetch(_host.Request(str(method).upper(), str(url), fields, body, timeout_ms))
    except Err as failed:
        error = failed.value
        raise HTTPError(f"{method.upper()} {url}: {error.message}", _KINDS.get(error.kind, "network")) from None
    return Response(answer.status, answer.url, answer.headers, answer.body)


def get(url, **kwargs):
    return request("GET", url, **kwargs)


def head(url, **kwargs):
    return request("HEAD", url, **kwargs)


def post(url, **kwargs):
    return request("POST", url, **kwargs)


def put(url, **kwargs):
    return request("PUT", url, **kwargs)


def patch(url, **kwargs):
    return request("PATCH", url, **kwargs)


def delete(url, **kwargs):
    return request("DELETE", url, **kwargs)
