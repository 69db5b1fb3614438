"""STAC API search: pystac-client over one HTTP layer that retries what may succeed next time.

``RetryingStacApiIO`` is the only place sitsflow talks HTTP to catalogs. ``timeout_s`` bounds
each attempt whole, connection, headers and body together: a watchdog shuts the socket of an
attempt that is not complete by then, so a server that drips a few bytes every second (which a
per-read timeout never notices) is cut off too. Timeouts, dropped connections and
408/425/429/5xx answers are retried with exponential back-off (honouring Retry-After), each
retry logged at info level with its cause; other answers fail at once. A request therefore gives
up after at most ``(retries + 1) * timeout_s`` plus the back-off waits. Header values (which may
be credentials) are registered with ``pipeline.secrets`` and never appear in a message.
``search_items`` turns what can go wrong (dead API, garbage answers, unknown collections, empty
results) into CatalogErrors that name the URL and say what to change.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pystac
import requests
import urllib3
from pystac.link import Link
from pystac_client import Client, ConformanceClasses
from pystac_client.errors import ClientTypeError
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO

from pipeline.catalog.config import CatalogConfig
from pipeline.catalog.items import (
    ItemFilter,
    items_from_features,
    period_interval,
    sort_and_dedupe,
)
from pipeline.catalog.tiles import item_tile, tiles_footprint
from pipeline.errors import CatalogError
from pipeline.secrets import mask, register

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0
DEADLINE_SLACK_S = 0.05
_TRANSIENT_ERRORS = (
    requests.ConnectionError,  # refused, reset, DNS; includes ConnectTimeout
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # the answer was cut off
    requests.exceptions.ContentDecodingError,
)


def redact(url: str) -> str:
    """The URL without user info and query values, fit for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "&".join(f"{kv.split('=', 1)[0]}=..." for kv in parts.query.split("&") if kv)
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


@dataclass(frozen=True)
class HttpSettings:
    """How catalog requests are made. ``headers`` may hold secrets: never printed or logged."""

    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.5
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_spec(cls, spec: CatalogConfig, *, field: str) -> HttpSettings:
        headers = {}
        for header, variable in spec.headers_from_env.items():
            value = os.environ.get(variable)
            if not value:
                raise CatalogError(
                    f"header {header!r} comes from the environment variable {variable!r}, "
                    "which is not set",
                    fix=f"export {variable} before the run (in Kubernetes, from a Secret), or "
                    f"remove {header!r} from headers_from_env",
                    field=field,
                )
            register(value)  # a credential, whatever the variable's name: never in a message
            headers[header] = value
        return cls(spec.timeout_s, spec.retries, spec.backoff_s, headers)


class ApiRequestError(APIError):
    """A request that failed for good: retries used up, or an answer retrying cannot change."""

    def __init__(
        self,
        url: str,
        problem: str,
        *,
        attempts: int,
        elapsed_s: float,
        status_code: int | None = None,
        transient: bool = False,
    ) -> None:
        self.url = url
        self.problem = problem
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.status_code = status_code
        self.transient = transient
        super().__init__(f"{redact(url)}: {problem} ({attempts} attempt(s) in {elapsed_s:.1f} s)")


class GarbageAnswerError(APIError):
    """The server answered 200 with something that is not a JSON object."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        self.problem = problem
        self.status_code = None
        super().__init__(f"{redact(url)}: {problem}")


def _describe(exc: Exception, timeout_s: float) -> str:
    text = str(exc)
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {timeout_s:g} s"
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout_s:g} s"
    if "refused" in text.lower():
        return "connection refused (nothing listens at that address)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the answer was cut off"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name does not resolve"
    if "reset" in text.lower() or "aborted" in text.lower():
        return "the connection was reset"
    return f"{type(exc).__name__}: {text[:200]}"


def _retry_after_s(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# --- one deadline per attempt -------------------------------------------------------------------

_attempt = threading.local()


class _Deadline:
    """Shuts the sockets of one attempt when its time is up (a per-read timeout does not bound
    a server that sends a byte every second; shutting the socket ends the blocked read)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _attempt.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _attempt.deadline = None

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watch_connection(connection: Any) -> None:
    deadline = getattr(_attempt, "deadline", None)
    if deadline is not None:
        deadline.watch(getattr(connection, "sock", None))


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)  # connects (bounded by the connect timeout), sends
        _watch_connection(self)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _watch_connection(self)


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections put their socket under the attempt's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPPool, "https": _WatchedHTTPSPool,
        }  # fmt: skip


class RetryingStacApiIO(StacApiIO):
    """pystac-client's HTTP class with bounded timeouts, retries and back-off on every request."""

    def __init__(self, settings: HttpSettings, *, seed: int | None = None) -> None:
        super().__init__(
            headers=dict(settings.headers), timeout=settings.timeout_s, max_retries=None
        )
        self.settings = settings
        adapter = _DeadlineAdapter(max_retries=0)  # retries are ours, with back-off and logs
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._jitter = random.Random(seed)
        self.attempts = 0  # every HTTP attempt made, for tests and reports

    def _backoff_s(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = min(MAX_BACKOFF_S, self.settings.backoff_s * 2 ** (retry - 1))
        return base * self._jitter.uniform(0.5, 1.0)  # jitter spreads retries of many clients

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        method = (method or "GET").upper()
        if method in ("POST", "PUT", "PATCH"):
            request = requests.Request(method, href, headers=headers, json=parameters)
        else:
            request = requests.Request(method, href, headers=headers, params=parameters or {})
        prepared = self.session.prepare_request(request)
        send_kwargs = self.session.merge_environment_settings(
            prepared.url or href, proxies={}, stream=None, verify=True, cert=None
        )
        timeout = self.settings.timeout_s
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            status: int | None = None
            retry_after: float | None = None
            # Just after the per-read timeout, so that a silent server is reported as such.
            deadline = _Deadline(timeout + DEADLINE_SLACK_S)
            try:
                with deadline:
                    response = self.session.send(prepared, timeout=timeout, **send_kwargs)
                    body = response.content  # reading may time out or be cut off too
            except requests.RequestException as exc:
                if isinstance(exc, requests.Timeout) or not deadline.expired:
                    if not isinstance(exc, _TRANSIENT_ERRORS):
                        raise ApiRequestError(
                            href, _describe(exc, timeout), attempts=attempt,
                            elapsed_s=time.monotonic() - started,
                        ) from None  # fmt: skip
                    problem = _describe(exc, timeout)
                else:
                    problem = f"no complete answer within {timeout:g} s (a slow or stalled server)"
            else:
                status = response.status_code
                if deadline.expired:  # cut off: what came may look whole (headers without body)
                    status = None
                    problem = f"no complete answer within {timeout:g} s (a slow or stalled server)"
                else:
                    if 200 <= status < 300:
                        try:
                            return body.decode("utf-8")
                        except UnicodeDecodeError:
                            raise GarbageAnswerError(href, "the answer is not UTF-8 text") from None
                    # A server may echo the request's headers (credentials): masked here already.
                    snippet = mask(" ".join(response.text.split()))[:200]
                    problem = f"HTTP {status} {response.reason or ''}".rstrip()
                    problem += f": {snippet}" if snippet else ""
                    if status not in RETRY_STATUSES:
                        raise ApiRequestError(
                            href, problem, attempts=attempt, elapsed_s=time.monotonic() - started,
                            status_code=status,
                        )  # fmt: skip
                    retry_after = _retry_after_s(response)
            elapsed = time.monotonic() - started
            if attempt > self.settings.retries:
                raise ApiRequestError(
                    href, problem, attempts=attempt, elapsed_s=elapsed, status_code=status,
                    transient=True,
                )  # fmt: skip
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
                raise ApiRequestError(
                    href, f"{problem}; the server asks to retry after {retry_after:.0f} s",
                    attempts=attempt, elapsed_s=elapsed, status_code=status, transient=True,
                )  # fmt: skip
            wait = self._backoff_s(attempt, retry_after)
            log.info(
                "%s %s failed (%s); retry %d/%d in %.1f s",
                method, redact(href), problem, attempt, self.settings.retries, wait,
            )  # fmt: skip
            time.sleep(wait)

    def read_json(self, source: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON object at ``source``; anything else (an HTML page...) is garbage."""
        text = self.read_text(source, *args, **kwargs)
        url = source.href if isinstance(source, Link) else str(source)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            start = " ".join(text.split())[:60]
            raise GarbageAnswerError(
                url, f"the answer is not JSON (it starts with {start!r})"
            ) from None
        if not isinstance(value, dict):
            raise GarbageAnswerError(
                url, f"the answer is JSON but not an object ({type(value).__name__})"
            )
        return value


# --- the search ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _api_errors(url: str, field: str) -> Iterator[None]:
    """Turn what the HTTP layer and pystac-client raise into CatalogErrors naming the API."""
    where = f"the STAC API {redact(url)}"
    try:
        yield
    except ApiRequestError as exc:
        request = "" if exc.url.rstrip("/") == url.rstrip("/") else f" (request {redact(exc.url)})"
        if exc.transient:
            raise CatalogError(
                f"{where} did not answer{request}: {exc.problem}, {exc.attempts} attempt(s) in "
                f"{exc.elapsed_s:.0f} s",
                fix=f"check {field}.url and that the API is reachable from here (network, proxy, "
                f"firewall); if it is down for a while, retry later or raise {field}.retries / "
                f"{field}.timeout_s",
                field=f"{field}.url",
            ) from None
        if exc.status_code in (401, 403):
            fix = f"give credentials with {field}.headers_from_env (e.g. an Authorization header)"
        elif exc.status_code == 404:
            fix = f"check {field}.url: it must be the API's root (the page listing /search)"
        elif exc.status_code is not None and 400 <= exc.status_code < 500:
            fix = f"check the search settings of {field} (query, filter, bbox, collections)"
        else:
            fix = f"check {field}.url"
        raise CatalogError(
            f"{where} refused a request{request}: {exc.problem}", fix=fix, field=f"{field}.url"
        ) from None
    except GarbageAnswerError as exc:
        raise CatalogError(
            f"{where} answered {redact(exc.url)} with garbage: {exc.problem}",
            fix=f"check that {field}.url is the root of a STAC API (a proxy or login page may be "
            "answering instead)",
            field=f"{field}.url",
        ) from None
    except (
        APIError,
        ClientTypeError,
        pystac.STACError,
        NotImplementedError,
        KeyError,
        TypeError,
        ValueError,
    ) as exc:
        raise CatalogError(
            f"{where} gave an answer that is not valid STAC ({type(exc).__name__}: "
            f"{str(exc)[:200]})",
            fix=f"check that {field}.url is the root of a STAC API, not a static catalog "
            "(for a catalog.json use kind: static)",
            field=f"{field}.url",
        ) from None


def _check_collections(client: Client, spec: CatalogConfig, field: str) -> None:
    for collection_id in spec.collections:
        if client.get_collection(collection_id) is not None:
            continue
        known = sorted(c.id for c in client.get_collections())
        close = difflib.get_close_matches(collection_id, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        listing = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "")
        raise CatalogError(
            f"the STAC API {redact(spec.url)} has no collection {collection_id!r} (it has: "
            f"{listing or 'none'})",
            fix=f"{hint}use collection ids the API lists at {redact(spec.url)}/collections",
            field=f"{field}.collections",
        )


def _cloud_filter(spec: CatalogConfig, client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """Server-side cloud-cover condition (CQL2 filter, else query extension) and the user's own."""
    query = dict(spec.query or {})
    cql = dict(spec.filter) if spec.filter else {}
    if spec.max_cloud_cover is None:
        return query, cql
    prop = spec.cloud_cover_property
    if client.conforms_to(ConformanceClasses.FILTER):
        condition = {"op": "<=", "args": [{"property": prop}, spec.max_cloud_cover]}
        cql = {"op": "and", "args": [cql, condition]} if cql else condition
    elif client.conforms_to(ConformanceClasses.QUERY):
        query.setdefault(prop, {}).setdefault("lte", spec.max_cloud_cover)
    # else: the API cannot filter it; the client-side filter after the search does.
    return query, cql


def _search_parameters(
    spec: CatalogConfig, start: date, end: date, client: Client, field: str
) -> dict[str, Any]:
    for name, conformance in (
        ("query", ConformanceClasses.QUERY),
        ("filter", ConformanceClasses.FILTER),
    ):
        if getattr(spec, name) is not None and not client.conforms_to(conformance):
            raise CatalogError(
                f"the STAC API {redact(spec.url)} does not support the {name} extension",
                fix=f"remove {name}, or filter with collections, bbox/tiles and max_cloud_cover",
                field=f"{field}.{name}",
            )
    query, cql = _cloud_filter(spec, client)
    params: dict[str, Any] = {
        "collections": list(spec.collections),
        "datetime": period_interval(start, end),
        "limit": spec.page_size,
        "max_items": spec.max_items + 1,  # one more, to notice when more match than allowed
    }
    if spec.bbox is not None:
        params["bbox"] = list(spec.bbox)
    elif spec.intersects is not None:
        params["intersects"] = spec.intersects
    elif spec.tiles:
        params["intersects"] = tiles_footprint(list(spec.tiles))
    if query:
        params["query"] = query
    if cql:
        params["filter"] = cql
        params["filter_lang"] = "cql2-json"
    return params


def _describe_search(spec: CatalogConfig, start: date, end: date) -> str:
    if spec.tiles:
        area = f"tiles {', '.join(spec.tiles)}"
    elif spec.bbox is not None:
        area = f"bbox {list(spec.bbox)}"
    else:
        area = "the intersects polygon"
    clouds = (
        f", cloud cover <= {spec.max_cloud_cover:g}%" if spec.max_cloud_cover is not None else ""
    )
    return f"collections {list(spec.collections)}, {area}, {start} .. {end}{clouds}"


@dataclass(frozen=True)
class SearchResult:
    items: list[pystac.Item]
    matched: int  # items the server returned, before the client-side checks
    requests: int  # HTTP attempts, retries included


def search_items(
    spec: CatalogConfig, start: date, end: date, *, field: str, seed: int | None = None
) -> SearchResult:
    """Every item of the STAC API at ``spec.url`` matching the spec and period, sorted by time.

    ``field`` is the manifest path of the sensor (``spec.sensors[0]``); errors point under it.
    """
    where = f"{field}.catalog"
    io = RetryingStacApiIO(
        HttpSettings.from_spec(spec, field=f"{where}.headers_from_env"), seed=seed
    )
    with _api_errors(spec.url, where):
        client = Client.open(spec.url, stac_io=io)
        if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
            raise CatalogError(
                f"{redact(spec.url)} is not a STAC API with item search (its landing page does "
                "not declare the item-search conformance class)",
                fix="for a static catalog.json use kind: static; for an API give its root URL",
                field=f"{where}.url",
            )
        _check_collections(client, spec, where)
        params = _search_parameters(spec, start, end, client, where)
        search = client.search(**params)
        found: list[pystac.Item] = []
        for page in search.pages_as_dicts():
            features = page.get("features")
            if not isinstance(features, list):
                raise GarbageAnswerError(spec.url, "a search page has no 'features' list")
            found.extend(
                items_from_features(
                    features, source=f"the search answer of {redact(spec.url)}",
                    fix="report it to the API's operators, or narrow the search to avoid the item",
                    field=f"{where}.url",
                )
            )  # fmt: skip
    if len(found) > spec.max_items:
        raise CatalogError(
            f"the search ({_describe_search(spec, start, end)}) matches more than "
            f"{spec.max_items} items",
            fix=f"narrow the area, period or collections, set max_cloud_cover, or raise "
            f"{where}.max_items",
            field=f"{where}.max_items",
        )
    if not found:
        raise CatalogError(
            f"the STAC API {redact(spec.url)} has no item for the search "
            f"({_describe_search(spec, start, end)})",
            fix="check the area (bbox is [west, south, east, north] in degrees), the period "
            "(spec.period) and the collection ids, or relax max_cloud_cover",
            field=where,
        )
    keep = ItemFilter.of(spec, start, end, spatial=False)
    chosen = sort_and_dedupe(it for it in found if keep.keeps(it))
    if not chosen and spec.tiles:
        seen = sorted({item_tile(it, spec.tile_property) or "unknown" for it in found})
        raise CatalogError(
            f"the search found {len(found)} item(s) around tiles {', '.join(spec.tiles)}, but "
            f"none of them is of those tiles (their tiles: {', '.join(seen[:20])})",
            fix=f"check {where}.tiles, or set {where}.tile_property to the item property that "
            "holds the tile id",
            field=f"{where}.tiles",
        )
    if not chosen:
        raise CatalogError(
            f"the STAC API {redact(spec.url)} returned {len(found)} item(s), but none passes "
            f"the checks ({_describe_search(spec, start, end)})",
            fix="relax max_cloud_cover or check spec.period",
            field=where,
        )
    return SearchResult(chosen, len(found), io.attempts)
