"""Where a URL points: its host, parsed the way HTTP clients parse it, and whether an address
is public. No I/O: resolving names is ``pushgate.outbound``'s job.

URLs from API callers (media) and operators (webhooks) make other programs connect somewhere:
pushgate itself, a WhatsApp bridge, a provider. A URL naming a loopback, private, link-local or
metadata address would let a caller reach what only the gateway's network can reach (SSRF). A
check is only as good as its parser: if it reads a different host than the client that later
connects, it vouches for the wrong one. So the host is read as the WHATWG URL standard reads it
(Node-based bridges, browsers), and wherever that could differ from RFC 3986 parsers (Python's,
httpx's) the URL is called ambiguous and refused rather than guessed:

- IPv4 in any spelling ``inet_aton`` and WHATWG accept: ``127.1``, ``0x7f.1``, ``2130706433``,
  ``0177.0.0.1``, with or without a trailing dot;
- IPv6 in brackets, zone ids (``[fe80::1%25eth0]``) dropped, IPv4-mapped/6to4/NAT64 forms judged
  by the IPv4 address they stand for;
- percent-encoded and full-width host text, decoded as WHATWG does (``127.0.0.%31``);
- userinfo (``http://a@127.0.0.1``: the host is after the last ``@``);
- a backslash, space or control character in the authority, or extra slashes after the scheme:
  refused as ambiguous (WHATWG and RFC 3986 parsers disagree on such URLs).
"""

from __future__ import annotations

import ipaddress
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HTTP_SCHEMES = ("http", "https")
# RFC 6052 well-known NAT64 prefix: DNS64 resolvers map IPv4 hosts into it.
_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
# WHATWG's forbidden host code points (after percent-decoding), less those refused earlier.
_FORBIDDEN_HOST_CHARS = frozenset("\x00\t\n\r #/:<>?@[\\]^|%")
# Dots that IDNA (UTS 46) maps to "." and NFKC leaves alone.
_IDEOGRAPHIC_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


class UrlError(ValueError):
    """A URL that cannot be judged. ``ambiguous`` says it parses, but not the same way in
    every client (a trick, refused as an address problem), rather than just being malformed."""

    def __init__(self, reason: str, ambiguous: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ambiguous = ambiguous


@dataclass(frozen=True, slots=True)
class UrlHost:
    """The host a URL connects to: an IP literal (``address``) or a DNS name (``name``,
    lower-case, no trailing dot), and the port (the scheme's default when none is given)."""

    address: IPAddress | None
    name: str | None
    port: int
    scheme: str

    @property
    def text(self) -> str:
        return str(self.address) if self.address is not None else str(self.name)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), judged instead of it:
    ``::ffff:127.0.0.1`` reaches localhost, and Python 3.11 flags every mapped address as
    reserved, public ones included."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_forbidden_address(address: IPAddress) -> bool:
    """Whether an outbound connection must not reach ``address``: anything but a public
    unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_forbidden_address(embedded)
        if address.is_site_local:   # fec0::/10: deprecated, but routed inside some networks
            return True
    return (address.is_private or address.is_loopback or address.is_link_local
            or address.is_multicast or address.is_reserved or address.is_unspecified
            # is_global also excludes ranges none of the flags above cover (100.64/10 CGNAT).
            or not address.is_global)


def is_local_name(name: str) -> bool:
    """``localhost`` and its subdomains resolve to loopback by definition (RFC 6761); refused
    without asking DNS, whose answer a resolver may not even be asked for."""
    return name == "localhost" or name.endswith(".localhost")


def _ipv4_number(part: str) -> int:
    """One part of an IPv4 host, as ``inet_aton`` reads it: decimal, 0-prefixed octal,
    0x-prefixed hex."""
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if not digits:
            return 0   # WHATWG reads a bare "0x" as zero
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits.isascii() or not digits.isalnum():
        raise UrlError(f"{part!r} is not a number")
    try:
        return int(digits, base)
    except ValueError:
        raise UrlError(f"{part!r} is not a number") from None


def _ends_in_number(host: str) -> bool:
    """WHATWG's test for "this host is meant as IPv4" (then it must parse as one)."""
    last = host.split(".")[-1]
    if last.isascii() and last.isdigit():
        return True
    if last[:2] in ("0x", "0X"):
        rest = last[2:]
        return all(c in "0123456789abcdefABCDEF" for c in rest)
    return False


def _parse_ipv4(host: str) -> ipaddress.IPv4Address:
    """An IPv4 host in any spelling ``inet_aton`` accepts: 1 to 4 parts, the last filling the
    remaining bytes (``127.1`` = 127.0.0.1, ``2130706433`` = 127.0.0.1)."""
    parts = host.split(".")
    if len(parts) > 4 or any(not p for p in parts):
        raise UrlError(f"host {host!r} is not a valid IPv4 address")
    numbers = [_ipv4_number(p) for p in parts]
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise UrlError(f"host {host!r} is not a valid IPv4 address")
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _authority(url: str) -> tuple[str, str]:
    """The scheme (lower-case) and authority of an http(s) URL."""
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in HTTP_SCHEMES:
        raise UrlError("not an http(s) URL")
    if rest[:1] in ("/", "\\"):
        # WHATWG skips any slashes before the host, RFC 3986 reads an empty host.
        raise UrlError("extra slashes before the host", ambiguous=True)
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    authority = rest[:end]
    if "\\" in authority:
        # WHATWG ends the authority at a backslash, RFC 3986 does not: two different hosts.
        raise UrlError("backslash in the host part", ambiguous=True)
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c.isspace() for c in authority):
        # Clients drop tabs and newlines anywhere, some cut at spaces: never what was meant.
        raise UrlError("space or control character in the host part", ambiguous=True)
    return scheme, authority


def url_host(url: str) -> UrlHost:
    """The host and port ``url`` (an http(s) URL; outer whitespace ignored) connects to.
    Raises ``UrlError``."""
    scheme, authority = _authority(url.strip())
    hostport = authority.rpartition("@")[2]   # userinfo ends at the last "@"
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise UrlError("unclosed [ in the host")
        host_text, port_text = hostport[1:close], hostport[close + 1:]
        if port_text and not port_text.startswith(":"):
            raise UrlError("text after the IPv6 address")
        port_text = port_text[1:]
        bracketed = True
    else:
        host_text, _, port_text = hostport.partition(":")
        bracketed = False
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
            raise UrlError(f"invalid port {port_text!r}")
        port = int(port_text)
    else:
        port = 443 if scheme == "https" else 80
    if bracketed:
        address_text = unquote(host_text).split("%", 1)[0]   # zone id: [fe80::1%25eth0]
        try:
            address = ipaddress.IPv6Address(address_text)
        except ValueError:
            raise UrlError(f"[{host_text}] is not an IPv6 address") from None
        return UrlHost(address, None, port, scheme)
    return _name_or_ipv4(host_text, port, scheme)


def _name_or_ipv4(host_text: str, port: int, scheme: str) -> UrlHost:
    try:
        host = unquote(host_text, errors="strict") if "%" in host_text else host_text
    except UnicodeDecodeError:
        raise UrlError(f"host {host_text!r} is not UTF-8 once decoded", ambiguous=True) from None
    if not host.isascii():
        # IDNA maps full-width digits and dots to ASCII before anything else looks at them.
        host = unicodedata.normalize("NFKC", host).translate(_IDEOGRAPHIC_DOTS)
    host = host.lower()
    if any(c in _FORBIDDEN_HOST_CHARS or ord(c) < 0x20 or ord(c) == 0x7F for c in host):
        raise UrlError(f"host {host_text!r} holds characters no host name has", ambiguous=True)
    # Trailing dots name the same host ("127.0.0.1." and "example.com." resolve as without).
    host = host.rstrip(".")
    if not host:
        raise UrlError("the URL has no host")
    if _ends_in_number(host):
        return UrlHost(_parse_ipv4(host), None, port, scheme)
    return UrlHost(None, host, port, scheme)


def literal_problem(host: UrlHost) -> str | None:
    """Why ``host`` is refused without asking DNS (a non-public IP literal, ``localhost``),
    or None: a public literal, or a name whose addresses decide."""
    if host.address is not None:
        if is_forbidden_address(host.address):
            return f"{host.address} is not a public address"
        return None
    if host.name is not None and is_local_name(host.name):
        return f"{host.name} is a loopback name"
    return None
