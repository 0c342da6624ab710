"""A small HTTP client for OpenAI-compatible servers: JSON requests and server-sent-event streams,
every failure turned into a `WorkbenchError` that names the problem and the fix.

Standard library only (`http.client`): each request has its own connection, so a stream is ended
by closing its socket (the server sees the client go and stops generating), and several threads
(a serving benchmark) never share one. Every socket read has a timeout: nothing hangs.
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

from ..errors import WorkbenchError


@dataclass(frozen=True)
class Endpoint:
    """Where the API lives: `http://host:port/v1` split into its parts."""

    scheme: str
    host: str
    port: int
    prefix: str       # path before the route, e.g. "/v1"
    api_key: str | None = None
    timeout: float = 60.0

    @classmethod
    def parse(cls, url: str, api_key: str | None = None, timeout: float = 60.0) -> "Endpoint":
        if not isinstance(url, str) or not url.strip():
            raise WorkbenchError(f"url={url!r} is invalid: give the server's address, e.g. "
                                 "'http://127.0.0.1:8000/v1'.")
        parts = urlsplit(url.strip() if "://" in url else "http://" + url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WorkbenchError(f"url={url!r} is not an http(s) address: give one like 'http://127.0.0.1:8000/v1'.")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise WorkbenchError(f"url={url!r} has an invalid port: give a number in 1..65535.") from None
        prefix = parts.path.rstrip("/")
        # The OpenAI routes live under /v1 on vLLM, SGLang, llama.cpp and mlx_lm; a bare host:port means that.
        prefix = prefix or "/v1"
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise WorkbenchError(f"timeout={timeout!r} is invalid: give the seconds to wait for the server, > 0.")
        return cls(parts.scheme, parts.hostname, port, prefix, api_key, float(timeout))

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"

    def connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        t = self.timeout if timeout is None else timeout
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=t, context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=t)

    def headers(self) -> dict[str, str]:
        out = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            out["Authorization"] = f"Bearer {self.api_key}"
        return out


class ServerError(WorkbenchError):
    """The server answered with an error, or not as an OpenAI-compatible server would."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _open(endpoint: Endpoint, method: str, route: str, body: dict | None,
          timeout: float | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send one request; return the open connection and its response (status 2xx), or raise."""
    conn = endpoint.connection(timeout)
    data = None if body is None else json.dumps(body).encode()
    where = f"{endpoint.url}{route}"
    try:
        conn.request(method, endpoint.prefix + route, body=data, headers=endpoint.headers())
        response = conn.getresponse()
    except BaseException as exc:
        conn.close()
        raise _network_error(exc, endpoint, where) from None
    if response.status >= 400:
        try:
            text = response.read(64 << 10).decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            text = ""
        finally:
            conn.close()
        raise _http_error(response.status, text, endpoint, where)
    return conn, response


def _network_error(exc: BaseException, endpoint: Endpoint, where: str) -> BaseException:
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return exc
    if isinstance(exc, ConnectionRefusedError):
        return WorkbenchError(f"no server answers at {endpoint.url} (connection refused): start it (e.g. "
                              "workbench.serve('tiny')) or check the host and port.")
    if isinstance(exc, socket.gaierror):
        return WorkbenchError(f"the host {endpoint.host!r} of {endpoint.url} is unknown: check the address.")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return WorkbenchError(f"{where} did not answer within {endpoint.timeout:g} s: the server is busy or "
                              "stuck; raise connect(..., timeout=...) or check the server's log.")
    if isinstance(exc, ssl.SSLError):
        return WorkbenchError(f"TLS to {endpoint.url} failed ({exc}): use http:// for a server without TLS.")
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return WorkbenchError(f"talking to {where} failed: {type(exc).__name__}: {exc}. Is it an HTTP server, "
                              "and still running?")
    return exc


def _http_error(status: int, text: str, endpoint: Endpoint, where: str) -> ServerError:
    detail = _error_message(text) or text.strip()[:300] or "(no message)"
    if status == 401 or status == 403:
        fix = "pass the server's key: workbench.connect(url, api_key=...)."
    elif status == 404:
        fix = (f"check the URL: OpenAI-compatible servers serve it under /v1 (e.g. {endpoint.scheme}://"
               f"{endpoint.host}:{endpoint.port}/v1), and the model name the server serves.")
    elif status in (400, 422):
        fix = "the server refused the request's settings; the message says which."
    else:
        fix = "see the server's log."
    return ServerError(f"{where} answered HTTP {status}: {detail} - {fix}", status)


def _error_message(text: str) -> str | None:
    """The message inside an OpenAI-style (or FastAPI-style) error body, if it is one."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:500]
    return None


def request_json(endpoint: Endpoint, method: str, route: str, body: dict | None = None,
                 timeout: float | None = None) -> dict:
    """One request, its JSON object answer."""
    conn, response = _open(endpoint, method, route, body, timeout)
    where = f"{endpoint.url}{route}"
    try:
        raw = response.read()
    except BaseException as exc:
        raise _network_error(exc, endpoint, where) from None
    finally:
        conn.close()
    try:
        data = json.loads(raw)
    except ValueError:
        raise ServerError(f"{where} did not answer with JSON (got {raw[:120]!r}): is this an OpenAI-compatible "
                          "server? Give the address of its API, e.g. http://host:port/v1.") from None
    if not isinstance(data, dict):
        raise ServerError(f"{where} answered {type(data).__name__} JSON, not an object: not an OpenAI-compatible reply.")
    return data


class EventStream:
    """The `data:` events of a server-sent-event response, parsed as JSON, until `[DONE]`.
    `close()` (or leaving a `with` block, or abandoning the iterator) closes the socket."""

    def __init__(self, endpoint: Endpoint, route: str, body: dict, timeout: float | None = None):
        self.where = f"{endpoint.url}{route}"
        self._endpoint = endpoint
        self._conn, self._response = _open(endpoint, "POST", route, body, timeout)
        self.done = False     # [DONE] was read
        self.closed = False

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._response.close()  # drops what is buffered too: nothing more is read
            except (OSError, http.client.HTTPException, ValueError):
                pass
            self._conn.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        kind = self._response.getheader("Content-Type", "")
        if "text/event-stream" not in kind and "json" in kind:
            # A server that ignores stream=true sends the whole answer as one JSON object.
            try:
                body = json.loads(self._response.read())
            except (ValueError, OSError, http.client.HTTPException) as exc:
                raise ServerError(f"{self.where} answered neither an event stream nor JSON ({exc}).") from None
            finally:
                self.close()
            if isinstance(body, dict) and "error" in body:
                raise ServerError(f"{self.where} reported an error: {_error_message(json.dumps(body))}")
            self.done = True
            yield body
            return
        try:
            while not self.closed:
                try:
                    line = self._response.readline(1 << 24)
                except BaseException as exc:
                    if self.closed:
                        return
                    raise _network_error(exc, self._endpoint, self.where) from None
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue  # blank separators, ": keep-alive" comments, "event:" names
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.done = True
                    return
                try:
                    event = json.loads(payload)
                except ValueError:
                    raise ServerError(f"{self.where} sent an event that is not JSON: {payload[:120]!r}.") from None
                if isinstance(event, dict) and "error" in event and "choices" not in event:
                    raise ServerError(f"{self.where} reported an error mid-stream: "
                                      f"{_error_message(payload.decode('utf-8', 'replace'))}")
                if not isinstance(event, dict):
                    raise ServerError(f"{self.where} sent an event that is not a JSON object: {payload[:120]!r}.")
                yield event
        finally:
            self.close()
