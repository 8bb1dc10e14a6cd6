"""Fetch a URL from the server's side without letting it reach the server's own network (SSRF).

`fetch_public` is the one place fakescope downloads a URL it was handed: an image URL the Images
API answers, or one pasted into the web app. Only `http`/`https`; the host must resolve to public
addresses alone (no loopback, private, link-local such as 169.254.169.254, or reserved ones), and
the connection goes to the address that was checked, so a DNS answer cannot change in between: through the proxy the
environment names for the URL (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, less `NO_PROXY`; http(s):// proxies only), the
request names that address (a `CONNECT` to it for https). An IPv6 address that
carries an IPv4 one to a gateway (NAT64, 6to4) is checked by that IPv4 address too.
Redirects are followed (at most `MAX_REDIRECTS`), each checked alike; resolving each host counts in the time limit, and
every connect, read and write waits at most the time left (`_deadline`), so a server dripping its answer cannot pass it.
`trusted` names origins (`scheme://host[:port]`) exempt from the address check: the Images API server the operator
configured (`OPENAI_BASE_URL`), which may itself be on loopback or a LAN. `fetch_url` fetches an image URL given as
an input (the web app, `detect`, `scan`, `Detector.predict`) within the input limits below.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from fakescope.errors import FakescopeError
from fakescope.io.redact import redact_http_logs, shown_url

MAX_REDIRECTS = 3
URL_MAX_BYTES = 20 * 1024 * 1024
"""The most an image URL given as an input may download."""
URL_TIMEOUT_S = 20.0
"""Seconds an image URL given as an input may take in all."""
TRUSTED_ENV = "FAKESCOPE_TRUSTED_ORIGINS"
"""Comma-separated origins (`http://images.intranet:8080`) whose input URLs skip the public-address check."""


class FetchError(FakescopeError):
    """A URL was refused by the policy, or could not be fetched; the message is one line."""


class URLRefused(FetchError):
    """The URL itself was refused, unfetched: malformed, not http(s), no host, or a non-public address."""


class FetchTooLarge(FetchError):
    """The body at the URL passed the byte limit (read no further)."""


class TransientFetchError(FetchError):
    """A fetch that may succeed later: a timeout, a refused or broken connection, a DNS answer to try again, or an HTTP
    status that says so (`TRANSIENT_STATUSES`). A scan rerun tries such a URL again; a 404, a web page, a body too large
    or one that is no image stays done."""


NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""The well-known NAT64 prefix: a gateway connects its addresses to the IPv4 address in their last 32 bits."""
RESOLVER_THREADS = 16
"""Threads that resolve hosts for fetches: `getaddrinfo` cannot be interrupted, so a fetch waits on one only until its
deadline, and hosts whose DNS server never answers hold at most these."""
TRANSIENT_STATUSES = frozenset({408, 425, 429, *range(500, 600)})
"""HTTP statuses of a server that may answer later (timeout, too early, too many requests, any 5xx)."""


def origin(url: str) -> str:
    """`scheme://host:port` of `url` (the default port filled in), lower-cased, a Unicode host name IDNA-encoded as it
    is fetched (`bücher.example`: `xn--bcher-kva.example`), so either form matches the other; as `trusted` takes it."""
    import httpx

    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    host = parts.hostname or ""
    try:
        host = httpx.URL(scheme="http", host=host).raw_host.decode("ascii")
    except httpx.InvalidURL:  # no valid IDNA name: no URL fetched has it, so it matches none
        pass
    return f"{scheme}://{host}:{port}"


def is_url(source: str) -> bool:
    """True for an `http://` or `https://` URL."""
    return source[:8].lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class Signing:
    """One provider's signing parameters: `names` (`*` ends a prefix) are left out of a URL's name when every one of
    `when` is in its query (always, when `when` is empty); matched as written unless `any_case`."""

    names: tuple[str, ...]
    when: tuple[str, ...] = ()
    any_case: bool = False

    def drops(self, keys: set[str]) -> Callable[[str], bool] | None:
        """Whether a key signs, for a query of `keys`; None when this provider did not sign it."""
        if not all(k in keys for k in self.when):
            return None
        fold = str.lower if self.any_case else str
        names = [fold(n) for n in self.names]
        return lambda key: any(fnmatchcase(fold(key), n) for n in names)


SIGNING_PARAMETERS = {
    "AWS S3 (SigV4)": Signing(("X-Amz-*",), any_case=True),
    "AWS S3 (SigV2)": Signing(("AWSAccessKeyId", "Signature", "Expires"), when=("AWSAccessKeyId", "Signature")),
    "CloudFront": Signing(("Key-Pair-Id", "Policy", "Signature", "Expires", "Hash-Algorithm"),
                          when=("Key-Pair-Id", "Signature")),
    "Google Cloud Storage (V4)": Signing(("X-Goog-*",), any_case=True),
    "Google Cloud Storage (V2)": Signing(("GoogleAccessId", "Signature", "Expires"), when=("GoogleAccessId", "Signature")),
    "Azure SAS": Signing(("sv", "ss", "srt", "sr", "sp", "st", "se", "spr", "sip", "si", "sig", "sdd", "ses", "skoid",
                          "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid"), when=("sv", "sig")),
    "generic": Signing(("token", "access_token")),
}
"""Query parameters that sign a URL rather than name its object: `url_name` leaves them out of a URL's name, so the
same object signed again keeps its name. A provider's names count only beside its own marks (`Signing.when`), so a
site's own `se`, `sp` or `Signature` stays in the name."""
LEGACY_SIGNING = ("x-amz-*", "awsaccesskeyid", "signature", "expires", "key-pair-id", "policy", "x-goog-*",
                  "googleaccessid", "sv", "ss", "srt", "sr", "sp", "st", "se", "spr", "sip", "si", "sig", "sdd", "ses",
                  "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid", "token", "access_token")
"""The names `url_name` left out, in any case and whatever else the query held, before `Signing.when`: `legacy_url_name`
names a URL so, to resume results folders written then."""


def shown_source(source: str) -> str:
    """A source as records name it (and a scan rerun skips it): an http(s) URL as `url_name` gives it, anything else as
    given."""
    return url_name(source) if is_url(source) else source


def source_stem(source: str) -> str:
    """The stem of files named after a source: its file name without its extension; of an http(s) URL, that of the
    last segment of its path as `shown_url` gives it (no user info, query or fragment), or its host where the path
    names none. URLs that differ only in their query share a stem: a caller numbers them apart."""
    if not is_url(source):
        return os.path.splitext(os.path.basename(source.rstrip("/")))[0]
    host, _, path = shown_url(source).partition("://")[2].partition("/")
    name = path.rstrip("/").rpartition("/")[2]
    return os.path.splitext(name)[0] if name else host.replace(":", "_")


def url_name(url: str) -> str:
    """A URL as every front end names it: without its user info (a password) and query (a signed URL's signature). If
    the query has parameters other than `SIGNING_PARAMETERS`, the name ends `#query=` and 12 hex digits of the sha256 of
    the named URL and those parameters, so URLs that differ there keep distinct names, and a URL signed again keeps its
    name, without showing any."""
    pairs = _query(url)
    rules = [d for rule in SIGNING_PARAMETERS.values() if (d := rule.drops({k for k, _ in pairs})) is not None]
    return _named(url, [(k, v) for k, v in pairs if not any(signs(k) for signs in rules)])


def legacy_url_name(url: str) -> str:
    """`url` as `url_name` named it before `SIGNING_PARAMETERS` had `Signing.when`: `LEGACY_SIGNING` left out in any
    case (a site's own `se=1` too)."""
    return _named(url, [(k, v) for k, v in _query(url) if not any(fnmatchcase(k.lower(), n) for n in LEGACY_SIGNING)])


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(url.partition("#")[0].partition("?")[2], keep_blank_values=True)


def _named(url: str, kept: list[tuple[str, str]]) -> str:
    if not kept:
        return shown_url(url)
    named = f"{shown_url(url)}?{urlencode(kept)}"
    return f"{shown_url(url)}#query={hashlib.sha256(named.encode()).hexdigest()[:12]}"


def fetch_url(url: str, max_bytes: int = URL_MAX_BYTES, *, timeout: float = URL_TIMEOUT_S,
              started: float | None = None) -> bytes:
    """An image URL given as an input: `fetch_public` within `max_bytes` and `timeout` (from `started`), trusting the
    origins `FAKESCOPE_TRUSTED_ORIGINS` names (environment or `.env`; an intranet image server, say); a `FetchError`
    naming one that is no valid URL (a bad port)."""
    from fakescope.io.storage import load_env_file

    load_env_file()
    trusted = tuple(filter(None, (o.strip() for o in os.environ.get(TRUSTED_ENV, "").split(","))))
    for entry in trusted:
        try:
            origin(entry)
        except ValueError as exc:
            raise FetchError(f"{TRUSTED_ENV} names no valid origin: {shown_url(entry)!r} ({exc})") from None
    return fetch_public(url, max_bytes=max_bytes, timeout=timeout, trusted=trusted, started=started)


def fetch_public(url: str, *, max_bytes: int, timeout: float, trusted: tuple[str, ...] = (),
                 started: float | None = None) -> bytes:
    """The body of `url`, at most `max_bytes`, within `timeout` seconds in all (redirects and body included), counted
    from `started` (a `time.monotonic()`; now by default: a caller that queued the fetch counts its wait).

    Raises:
        FetchError: (`URLRefused` for the first three) a malformed URL, a scheme other than http(s), a host that
            resolves to a non-public address (and is not `trusted`), too many redirects, an HTTP error, a text or JSON
            answer (not read), a network failure, a proxy that is no http(s):// URL or that refused the request (403,
            407: `the proxy for https:// URLs (proxy.corp:3128, from HTTPS_PROXY or ALL_PROXY) answered 407 ...`; to a plain
            http request, one its `Proxy-Status` says it made, `_proxy_error`) or
            whose TLS certificate failed verification, a body over `max_bytes`
            (`FetchTooLarge`), or a fetch past `timeout`
            (a server dripping its body would otherwise hold it for as long as it likes). `TransientFetchError` for
            those that may pass: timeouts (resolving a host too), network failures, a DNS `EAI_AGAIN`, `TRANSIENT_STATUSES`
            (the proxy's too, to a `CONNECT` or by its `Proxy-Status`: 502, 503, 504 when its upstream is down), a proxy
            whose name could not be resolved (in time too), that could not be reached or did not answer a `CONNECT` in
            time, or whose TLS handshake timed out.
    """
    import httpx

    from fakescope.io._deadline import DeadlineBackend, DeadlineTransport

    redact_http_logs()  # httpx logs each request's URL, a signed URL's signature included, at INFO
    trusted_origins = {origin(t) for t in trusted}
    deadline = (time.monotonic() if started is None else started) + timeout
    clients: dict[tuple[str | None, str], tuple[httpx.Client, DeadlineBackend]] = {}

    def client(proxy: str | None, host: str, address: str) -> httpx.Client:
        """The client for `host` through `proxy` (None: direct), TLS with `address` checking the certificate for
        `host`: one per (proxy, host), as connections are pooled by address, so one verified for a host is never
        reused for another host on that address."""
        if (proxy, host) not in clients:
            backend = DeadlineBackend(deadline, proxy=proxy and httpx.URL(proxy).scheme)
            made = httpx.Client(timeout=timeout, follow_redirects=False, transport=DeadlineTransport(backend, proxy))
            clients[proxy, host] = made, backend
        made, backend = clients[proxy, host]
        backend.names[address] = host
        return made

    try:
        for _ in range(MAX_REDIRECTS + 1):
            sender, request, proxy = _pinned_request(client, url, trusted_origins, deadline, timeout)
            try:
                answer = sender.send(request, stream=True)
                try:
                    if answer.is_redirect and "location" in answer.headers:
                        url = _redirected(url, answer.headers["location"])
                        continue
                    # the proxy's own 407, or an answer its Proxy-Status says it made (in a CONNECT tunnel only the server
                    # answers; another status may be the server's)
                    if proxy and request.url.scheme == "http" and answer.status_code >= 400:
                        made = _proxy_error(answer.headers.get("proxy-status", ""))
                        if made or answer.status_code == 407:
                            why = f"{answer.status_code} {answer.reason_phrase}" + (f" (error={made})" if made else "")
                            raise _proxy_failed(request.url.scheme, proxy, why)
                    if answer.status_code >= 400:
                        error = TransientFetchError if answer.status_code in TRANSIENT_STATUSES else FetchError
                        raise error(f"HTTP Error {answer.status_code}: {answer.reason_phrase}")
                    _check_type(answer.headers.get("content-type", ""))
                    return _read(answer, max_bytes, deadline, timeout)
                finally:
                    answer.close()
            except httpx.ProxyError as exc:  # the proxy refused the CONNECT (`503 Service Unavailable`), or no connection
                raise _proxy_failed(request.url.scheme, proxy, str(exc), lasting=_certificate_refused(exc)) from None
            except httpx.HTTPError as exc:
                if isinstance(exc, httpx.TimeoutException):
                    _left(deadline, timeout)  # a wait cut at the deadline: says so, as a chunk read past it does
                transient = (isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))
                             and not _certificate_refused(exc))  # a certificate for another name will not change
                raise (TransientFetchError if transient else FetchError)(f"{type(exc).__name__}: {exc}") from None
    finally:
        for made, _ in clients.values():
            made.close()
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _redirected(url: str, location: str) -> str:
    """Where a redirect from `url` to `location` leads; a `FetchError` when `urljoin` cannot tell (a bad IPv6 host)."""
    try:
        return urljoin(url, location)
    except ValueError as exc:
        raise FetchError(f"redirected to no valid URL ({exc})") from None


def _left(deadline: float, timeout: float) -> float:
    """Seconds left before `deadline`; a `FetchError` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TransientFetchError(f"the file at that URL took over {timeout:g} s to download")
    return left


def _pinned_request(client, url: str, trusted_origins: set[str], deadline: float, timeout: float):
    """A request for `url` sent to the address that passed the check (the TLS name stays the host's, and so does `Host`
    but for a plain http request through a proxy, which names the address),
    resolved and sent before `deadline` (`timeout` seconds from the fetch's start), the `client(proxy, host, address)`
    to send it with, and the proxy the environment names for `url` that it goes through (None: none)."""
    import httpx

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port or IPv6 address
        raise URLRefused(f"not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise URLRefused(f"only http:// and https:// URLs can be fetched, not {parts.scheme or 'schemeless'}: ones")
    if not parts.hostname:
        raise URLRefused("the URL has no host")
    try:  # a Unicode host name IDNA-encoded (`bücher.example`: `xn--bcher-kva.example`), as DNS, TLS and `Host` take it
        named = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise URLRefused(f"not a valid URL ({exc})") from None
    host, authority = named.raw_host.decode("ascii"), named.netloc.decode("ascii")
    address = _public_address(host, port or (443 if parts.scheme.lower() == "https" else 80),
                              exempt=origin(url) in trusted_origins, deadline=deadline, timeout=timeout)
    netloc = f"[{address}]" if ":" in address else address
    if port:
        netloc += f":{port}"
    proxy = _proxy(parts.scheme.lower(), authority)
    sender = client(proxy, host, address)
    # through a proxy, an http request's target is the absolute URL of the address, and RFC 9112 (3.2) wants its `Host`
    # to be that URL's authority, which httpx sets; in a tunnel, or direct, the target is a path: `Host` names the host
    headers = {} if proxy and parts.scheme.lower() == "http" else {"Host": authority}
    try:
        return sender, sender.build_request("GET", parts._replace(netloc=netloc).geturl(), headers=headers,
                                            timeout=_left(deadline, timeout)), proxy
    except httpx.InvalidURL as exc:  # a control character, a part too long
        raise URLRefused(f"not a valid URL ({exc})") from None


def _certificate_refused(exc: BaseException) -> bool:
    """Whether the server's TLS certificate failed verification somewhere in `exc`'s chain (httpx wraps httpcore's
    error, which wraps `ssl`'s)."""
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _proxy(scheme: str, host: str) -> str | None:
    """The proxy URL the environment names for `scheme` URLs of `host` (`host:port`), as urllib reads it (`HTTP_PROXY`,
    `HTTPS_PROXY`, else `ALL_PROXY`; none for a host `NO_PROXY` names); a `FetchError` for one not http(s)://."""
    from urllib.request import getproxies, proxy_bypass

    import httpx

    proxies = getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or proxy_bypass(host):
        return None
    named = _proxy_variables(scheme)
    proxy = proxy if "://" in proxy else f"http://{proxy}"
    try:
        kind = httpx.URL(proxy).scheme
    except httpx.InvalidURL:  # a bad port, say; not shown, as it may hold a password
        raise FetchError(f"the proxy for {scheme}:// URLs ({named}) is not a valid URL") from None
    if kind not in ("http", "https"):  # SOCKS takes socksio, not installed with fakescope
        raise FetchError(f"cannot fetch {scheme}:// URLs through a {kind}:// proxy ({named}): only http:// and https:// "
                         "proxies are supported")
    return proxy


def _proxy_variables(scheme: str) -> str:
    return f"{scheme.upper()}_PROXY or ALL_PROXY"


def _proxy_failed(scheme: str, proxy: str, why: str, *, lasting: bool = False) -> FetchError:
    """The error for `proxy`, that of `scheme` URLs, answering `why` (`503 Service Unavailable`), or why no connection to
    it was made (`could not be reached (timed out)`): transient for `TRANSIENT_STATUSES` (busy, its upstream down) and no
    connection unless `lasting` (its TLS certificate refused), permanent for others (403, 407: credentials wanted). It
    names the proxy by host and port, never its URL, which may hold a password. httpcore's `ProxyError` carries a
    refused `CONNECT`'s status in its text alone (`%d %s`), so `why` is read for it."""
    import httpx

    status = int(why[:3]) if why[:3].isdigit() else None
    lasting = lasting or (status is not None and status not in TRANSIENT_STATUSES)
    via = httpx.URL(proxy)
    named = f"{via.host if ':' not in via.host else f'[{via.host}]'}:{via.port or (443 if via.scheme == 'https' else 80)}"
    return (FetchError if lasting else TransientFetchError)(
        f"the proxy for {scheme}:// URLs ({named}, from {_proxy_variables(scheme)}) {'answered ' * bool(status)}{why}")


_MEMBER = re.compile(r'(?:"(?:[^"\\]|\\.)*"|[^",])+')
_PARAMETER = re.compile(r'(?:"(?:[^"\\]|\\.)*"|[^";])+')
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+.^_`|~-]*")


def _proxy_error(field: str) -> str | None:
    """The `error` of the last member of a `Proxy-Status` field (RFC 9209), the intermediary nearest fakescope, which
    sets it on an answer it made itself (`proxy.corp; error=destination_unavailable`); None where it has none (it passed
    another's answer on) or there is no field (Squid and nginx send none). A structured-field list split by hand, quoted
    strings kept whole: no parser comes with fakescope's dependencies."""
    members = _MEMBER.findall(field)
    for parameter in _PARAMETER.findall(members[-1])[1:] if members else ():
        key, _, value = parameter.partition("=")
        if key.strip() == "error" and _TOKEN.fullmatch(value.strip()):
            return value.strip()
    return None


def _public_address(host: str, port: int, *, exempt: bool, deadline: float, timeout: float) -> str:
    """The first address `host` resolves to before `deadline`, once every one of them is public (or the origin is
    exempt); a `TransientFetchError` when no answer comes in time, as for DNS `EAI_AGAIN`."""
    try:
        infos = _resolve(host, port, _left(deadline, timeout))
    except TimeoutError:
        raise TransientFetchError(f"cannot resolve host {host!r}: no answer within the {timeout:g} s limit") from None
    except (socket.gaierror, UnicodeError) as exc:
        again = getattr(exc, "errno", None) == socket.EAI_AGAIN  # a resolver that may answer later, not "no such host"
        raise (TransientFetchError if again else FetchError)(f"cannot resolve host {host!r}: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not exempt:
        for address in addresses:
            if not all(a.is_global and not a.is_multicast for a in (address, *_carried(address))):
                raise URLRefused(f"refused to fetch from {host!r}: it resolves to {address}, a non-public address")
    return str(addresses[0])


def _resolve(host: str, port: int, wait: float) -> list[tuple]:
    """`socket.getaddrinfo` of `host` (TCP) on a `_resolvers` thread, waited on for `wait` seconds at most: a
    `TimeoutError` past them (the image's host here, the proxy's name in `_deadline`)."""
    resolving = _resolvers().submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return resolving.result(wait)
    except TimeoutError:
        resolving.cancel()  # not started yet: let it go; a resolution under way ends in its thread
        raise


@cache
def _resolvers() -> ThreadPoolExecutor:
    """The `RESOLVER_THREADS` pool, made on the first fetch."""
    return ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="fakescope-resolve")


def _carried(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 address an IPv6 `address` reaches through a NAT64 or 6to4 gateway (`64:ff9b::a00:1` reaches 10.0.0.1),
    which `is_global` does not look at; none for others."""
    if address.version == 4:
        return []
    if address in NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return [address.sixtofour] if address.sixtofour else []


def _check_type(content_type: str) -> None:
    """Refuse, unread, a body its server calls text (a web page pasted for an image); other types are left to the
    decoder, which sniffs the bytes (image servers often say `application/octet-stream`)."""
    media = content_type.split(";")[0].strip().lower()
    if media.startswith("text/") or media in ("application/json", "application/xhtml+xml"):
        raise FetchError(f"the URL answered {media}, not an image (a web page? use the image's own address)")


def _read(answer, max_bytes: int, deadline: float, timeout: float) -> bytes:
    """The body, held once: `getvalue` hands its buffer over uncopied (a bytearray's `bytes()` held it twice)."""
    data = io.BytesIO()
    for chunk in answer.iter_bytes():
        data.write(chunk)
        _left(deadline, timeout)
        if data.tell() > max_bytes:
            raise FetchTooLarge(f"the file at that URL is over {max_bytes:,} bytes")
    return data.getvalue()
