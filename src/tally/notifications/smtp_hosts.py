"""Which SMTP hosts a merchant may save: Tally connects to a host a merchant typed, so outside
development it must not be loopback, private, link-local or otherwise non-public (the webhooks'
server-side request forgery guard, `webhooks.addresses`, decides what is public)."""

from __future__ import annotations

from tally.webhooks.addresses import ResolutionFailed, is_public, resolve


def host_problem(host: str, port: int, *, development: bool) -> str | None:
    """Why Tally must not connect to this host, or None (always None in development)."""
    if development:
        return None
    try:
        addresses = resolve(host, port)
    except ResolutionFailed as error:
        return str(error)
    for address in addresses:
        if not is_public(address):
            return (
                "must not point to a loopback, private or link-local address "
                f"({host} resolves to {address})"
            )
    return None
