"""One HTTP attempt of a delivery: POST the body, signed, to an address the guard checked.

The connection goes to the checked IP address itself; the URL's host name stays in the Host
header, in TLS SNI and in certificate verification (httpcore's ``sni_hostname``), so the
certificate must still be valid for the name the merchant typed. A new client per attempt:
a pooled connection could otherwise be reused for another host name on the same address.
Redirects are not followed (a 3xx is a failure): a redirect could point anywhere, unchecked.
``trust_env=False`` keeps proxy variables from routing the request past the pinned address.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tally import __version__
from tally.webhooks.addresses import CheckedUrl, IPAddress
from tally.webhooks.policy import DeliveryPolicy
from tally.webhooks.signing import SIGNATURE_HEADER, sign

USER_AGENT = f"Tally-Webhooks/{__version__}"


@dataclass(frozen=True)
class Response:
    """What the endpoint answered: the status, a little of the body, and Retry-After."""

    status_code: int
    excerpt: str
    retry_after: float | None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: rare enough to fall back on the schedule
    return seconds if seconds >= 0 else None


def _read_excerpt(response: httpx.Response, limit: int) -> str:
    taken = b""
    for chunk in response.iter_bytes():
        taken += chunk
        if len(taken) >= limit:
            break
    return taken[:limit].decode("utf-8", "replace")


def post(
    target: CheckedUrl,
    addresses: list[IPAddress],
    *,
    body: bytes,
    secrets: list[str],
    event_id: str,
    event_type: str,
    policy: DeliveryPolicy,
    verify: bool | str = True,
) -> Response:
    """POST to the first checked address that accepts a connection; raises httpx errors."""
    url = httpx.URL(target.url)
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Tally-Event-Id": event_id,
        "Tally-Event-Type": event_type,
        SIGNATURE_HEADER: sign(secrets, body),
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    timeout = httpx.Timeout(policy.timeout_seconds, connect=policy.connect_timeout_seconds)
    last_error: httpx.ConnectError | None = None
    with httpx.Client(
        timeout=timeout, follow_redirects=False, trust_env=False, verify=verify
    ) as client:
        for address in addresses:
            request = client.build_request(
                "POST",
                url.copy_with(host=str(address)),
                content=body,
                headers=headers,
                extensions=extensions,
            )
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectError as exc:
                # Another checked address of the same host may answer (IPv6 then IPv4).
                last_error = exc
                continue
            try:
                excerpt = _read_excerpt(response, policy.response_excerpt_bytes)
            finally:
                response.close()
            return Response(
                response.status_code, excerpt, _retry_after(response.headers.get("retry-after"))
            )
    assert last_error is not None  # the guard never returns an empty list
    raise last_error
