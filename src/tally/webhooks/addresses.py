"""The server-side request forgery guard: which URLs a webhook may have and may reach.

A merchant types the URL, so without a guard Tally's worker could be made to POST to its own
database, a cloud metadata service (169.254.169.254) or anything else on the private network.
Outside development and tests a URL must be https and every address its host resolves to must
be public: not loopback, private, link-local, shared (100.64/10), multicast, reserved or
unspecified, including IPv4 addresses wrapped in IPv6 (mapped, 6to4, Teredo, NAT64).

The check runs when the endpoint is saved and again before every attempt, because DNS answers
change. The sender then connects to an address this module checked (the URL's host is kept
for the Host header, TLS SNI and certificate verification), so a second, different DNS answer
between the check and the connection (DNS rebinding) is never used.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx

from tally.errors import FieldProblem, ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2000
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Replaced by tests to play a DNS server whose answers change; the real one otherwise.
_getaddrinfo = socket.getaddrinfo


class AddressRefused(ValidationFailed):
    """A URL Tally will not send to: its scheme, its form, or where its host points."""


class ResolutionFailed(Exception):
    """The host has no address right now (which may pass: the sender retries)."""


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the checks: its parts as the sender needs them."""

    url: str
    scheme: str
    host: str  # IDNA-encoded, lower case, without brackets
    port: int


def _refuse(message: str, value: str | None = None) -> AddressRefused:
    return AddressRefused(message, [FieldProblem("url", message, value)])


def parse_url(url: str, *, allow_insecure: bool) -> CheckedUrl:
    """Check a URL's form: https (or http when insecure is allowed), a host, no credentials."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise _refuse(f"the URL must have 1 to {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise _refuse("the URL is not a valid web address", url) from None
    allowed = ("https", "http") if allow_insecure else ("https",)
    if parsed.scheme not in allowed:
        raise _refuse("the URL must start with https://", url)
    if not parsed.raw_host:
        raise _refuse("the URL has no host name", url)
    if parsed.userinfo:
        # Credentials in the URL would be shown on every page that lists the endpoint.
        raise _refuse("the URL must not contain a user name or password; use the signature")
    if parsed.fragment:
        raise _refuse("the URL must not have a #fragment", url)
    host = parsed.raw_host.decode("ascii").lower()
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return CheckedUrl(url=str(parsed), scheme=parsed.scheme, host=host, port=port)


def is_public(address: IPAddress) -> bool:
    """True for an address on the public internet (and for no IPv4 hidden inside IPv6)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to now (an IP literal is its own answer)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        answers = _getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolutionFailed(f"{host} does not resolve: {exc}") from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in answers:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise ResolutionFailed(f"{host} has no address")
    return found


def allowed_addresses(target: CheckedUrl, *, allow_private: bool) -> list[IPAddress]:
    """The host's addresses, all checked; refused when any one of them is not public.

    Any, not all: a host that answers with one public and one private address would otherwise
    reach the private one whenever the sender picked it.
    """
    addresses = resolve(target.host, target.port)
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise _refuse(
                    "webhook URLs must not point to loopback, private or link-local addresses"
                    f" ({target.host} resolves to {address})",
                    target.url,
                )
    return addresses


def check_subscription_url(url: str, *, development: bool) -> CheckedUrl:
    """The checks a URL must pass to be saved as an endpoint.

    In development and tests http and local addresses are allowed (a receiver on the same
    machine) and the host is not looked up, so an address that only resolves later is fine.
    """
    target = parse_url(url, allow_insecure=development)
    if not development:
        try:
            allowed_addresses(target, allow_private=False)
        except ResolutionFailed as exc:
            raise _refuse(str(exc), url) from None
    return target
