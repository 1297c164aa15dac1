"""Reading a URL's host the way HTTP clients read it, and judging it without DNS
(``pushgate.core.addresses``)."""

from __future__ import annotations

import ipaddress

import pytest

from pushgate.core.addresses import (
    UrlError,
    is_forbidden_address,
    literal_problem,
    url_host,
)

# Every spelling of a non-public address a client would connect to.
NON_PUBLIC_URLS = [
    "http://127.0.0.1/x.jpg",
    "http://127.1/x.jpg",                       # inet_aton: the last part fills the rest
    "http://127.0.1/x.jpg",
    "http://0x7f.1/x.jpg",                      # hex part
    "http://0x7F000001/x.jpg",                  # one hex number
    "http://2130706433/x.jpg",                  # one decimal number
    "http://0177.0.0.1/x.jpg",                  # octal part
    "http://017700000001/x.jpg",                # one octal number
    "http://127.0.0.1./x.jpg",                  # trailing dot
    "http://127.0.0.%31/x.jpg",                 # percent-encoded host (WHATWG decodes it)
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/x.jpg",   # full-width digits
    "http://127\u30020\u30020\u30021/x.jpg",    # ideographic full stops
    "  http://127.0.0.1/x.jpg \n",              # outer whitespace
    "http://a@127.0.0.1/x.jpg",                 # userinfo before the host
    "http://example.com:80@127.0.0.1/x.jpg",    # userinfo that looks like a host
    "http://a@b@127.0.0.1/x.jpg",               # the host follows the last @
    "http://127.0.0.1:8080/x.jpg",
    "HTTP://127.0.0.1/x.jpg",
    "http://localhost/x.jpg",
    "http://LOCALHOST./x.jpg",
    "http://api.localhost/x.jpg",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://0xa9fea9fe/latest/",                 # metadata, as one hex number
    "http://10.0.0.1/x.jpg",
    "http://172.16.5.4/x.jpg",
    "http://192.168.1.1/x.jpg",
    "http://100.64.0.1/x.jpg",                   # CGNAT
    "http://0.0.0.0/x.jpg",
    "http://0/x.jpg",
    "http://224.0.0.1/x.jpg",                    # multicast
    "http://192.0.2.1/x.jpg",                    # documentation
    "http://255.255.255.255/x.jpg",
    "http://[::1]/x.jpg",
    "http://[::]/x.jpg",
    "http://[::ffff:127.0.0.1]/x.jpg",           # IPv4-mapped
    "http://[::ffff:7f00:1]/x.jpg",
    "http://[::ffff:169.254.169.254]/x.jpg",
    "http://[::127.0.0.1]/x.jpg",                # IPv4-compatible (deprecated, reserved)
    "http://[64:ff9b::a00:1]/x.jpg",             # NAT64 of 10.0.0.1
    "http://[2002:7f00:1::]/x.jpg",              # 6to4 of 127.0.0.1
    "http://[fe80::1%25eth0]/x.jpg",             # link-local with a zone id
    "http://[fe80::1]:8080/x.jpg",
    "http://[fd00::1]/x.jpg",                    # unique local
    "http://[fec0::1]/x.jpg",                    # site-local
    "http://[ff02::1]/x.jpg",                    # multicast
]


@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_every_spelling_of_a_non_public_host_is_refused(url: str) -> None:
    assert literal_problem(url_host(url)) is not None


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.1/x", "127.0.0.1"),
    ("http://0x7f.1/x", "127.0.0.1"),
    ("http://2130706433/x", "127.0.0.1"),
    ("http://0177.0.0.1/x", "127.0.0.1"),
    ("http://0xa9.0xfe.0xa9.0xfe/x", "169.254.169.254"),
    ("http://a@b@10.1.2.3:81/x", "10.1.2.3"),
    ("http://[fe80::1%25eth0]/x", "fe80::1"),
    ("http://8.8.8.8./x", "8.8.8.8"),
])
def test_ipv4_and_ipv6_spellings_read_as_clients_read_them(url: str, expected: str) -> None:
    assert url_host(url).address == ipaddress.ip_address(expected)


@pytest.mark.parametrize("url", [
    "https://8.8.8.8/x.jpg", "http://[2606:4700::1111]/x.jpg", "http://[::ffff:8.8.8.8]/x",
    "https://cdn.example.com/x.jpg", "https://user:pw@cdn.example.com:8443/x.jpg",
    "https://localhost.example.com/x.jpg",   # only localhost and *.localhost are loopback names
])
def test_public_literals_and_names_pass_the_literal_check(url: str) -> None:
    assert literal_problem(url_host(url)) is None


def test_names_are_lower_case_without_trailing_dot_and_ports_default() -> None:
    host = url_host("https://CDN.Example.COM./a.jpg")
    assert (host.name, host.address, host.port) == ("cdn.example.com", None, 443)
    assert url_host("http://cdn.example.com/a").port == 80
    assert url_host("http://cdn.example.com:8080/a").port == 8080
    assert url_host("http://bücher.example/a").name == "bücher.example"


@pytest.mark.parametrize("url", [
    "http://evil.com\\@127.0.0.1/x.jpg",   # WHATWG: host evil.com; RFC 3986: 127.0.0.1
    "http://127.0.0.1\\.evil.com/x.jpg",
    "http:///127.0.0.1/x.jpg",             # WHATWG skips the slash, RFC 3986 reads no host
    "http://127.0.0.1 /x.jpg",
    "http://127.0.\t0.1/x.jpg",            # clients drop the tab: 127.0.0.1
    "http://127.0.0.1\n.evil.com/x.jpg",
    "http://127.0.0.%2f/x.jpg",            # a decoded "/" inside the host
    "http://evil.com%40127.0.0.1/x.jpg",   # a decoded "@"
    "http://%ff/x.jpg",                    # not UTF-8 once decoded
])
def test_hosts_clients_read_differently_are_ambiguous(url: str) -> None:
    with pytest.raises(UrlError) as caught:
        url_host(url)
    assert caught.value.ambiguous


@pytest.mark.parametrize("url", [
    "ftp://example.com/a.jpg", "file:///etc/passwd", "gopher://127.0.0.1/", "javascript:x",
    "http://", "http://:80/x", "http://a@/x", "http://example.com:99999/x",
    "http://example.com:8o/x", "http://[::1/x", "http://[::1]x/x", "http://[127.0.0.1]/x",
    "http://256.0.0.1/x", "http://1.2.3.4.5/x", "http://08.0.0.1/x", "http://1.0x100.0.0/x",
    "http://4294967296/x",
])
def test_malformed_urls_are_errors_but_not_ambiguous(url: str) -> None:
    with pytest.raises(UrlError) as caught:
        url_host(url)
    assert not caught.value.ambiguous


@pytest.mark.parametrize(("address", "forbidden"), [
    ("8.8.8.8", False), ("1.1.1.1", False), ("2606:4700::1111", False),
    ("::ffff:8.8.8.8", False), ("64:ff9b::808:808", False),
    ("127.0.0.1", True), ("169.254.169.254", True), ("100.64.0.1", True), ("0.0.0.0", True),
    ("0.1.2.3", True), ("198.18.0.1", True), ("203.0.113.9", True), ("240.0.0.1", True),
    ("239.255.255.250", True), ("::", True), ("::1", True), ("fe80::1", True),
    ("fc00::1", True), ("fec0::1", True), ("ff02::1", True), ("2001:db8::1", True),
    ("::ffff:10.0.0.1", True), ("2002:a9fe:a9fe::", True),
])
def test_address_classification(address: str, forbidden: bool) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address)) is forbidden
