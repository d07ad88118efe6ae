"""Paging through Dotdigital's contacts: the client's reading of ``_links`` and the fake."""

from __future__ import annotations

import pytest

from tally.devtools import dotdigital_emulator_listing as listing
from tally.integrations.dotdigital.client import FakeDotdigitalClient, _parse_contact_page


def test_the_next_marker_comes_from_the_link_when_it_is_not_given_apart() -> None:
    body = {
        "_items": [{"contactId": 7, "identifiers": {"email": "a@b.io"}, "dataFields": {"X": 1}}],
        "_links": {"next": {"link": "/contacts/v3?limit=1&marker=abc%3D"}},
    }
    page = _parse_contact_page(body)
    assert page.next_marker == "abc="
    assert [(c.contact_id, c.email, c.data_fields) for c in page.contacts] == [
        (7, "a@b.io", {"X": 1})
    ]
    assert (
        _parse_contact_page({"_items": [], "_links": {"self": {"link": "x"}}}).next_marker is None
    )


def test_the_fake_pages_through_its_contacts_with_the_fields_asked_for() -> None:
    fake = FakeDotdigitalClient()
    fake.create_data_field("LOYALTY_POINTS", "Numeric")
    for i in range(5):
        fake.upsert_contact(f"c{i}@example.com", {"LOYALTY_POINTS": i, "FIRSTNAME": "Ann"})
    seen, marker = [], None
    while True:
        page = fake.list_contacts(["LOYALTY_POINTS"], limit=2, marker=marker)
        seen += [(c.email, c.data_fields) for c in page.contacts]
        if page.next_marker is None:
            break
        marker = page.next_marker
    assert seen == [(f"c{i}@example.com", {"LOYALTY_POINTS": i}) for i in range(5)]
    with pytest.raises(ValueError, match="1 to 5000"):
        fake.list_contacts([], limit=5001)


def test_the_emulator_pages_in_contact_id_order_after_its_marker() -> None:
    contacts = [
        {
            "contactId": cid,
            "email": f"c{cid}@example.com",
            "status": "subscribed",
            "created": "2024-01-01T00:00:00+00:00",
            "updated": "2024-01-01T00:00:00+00:00",
            "dataFields": {"P": cid},
        }
        for cid in (3, 1, 2)
    ]
    query = listing.parse_query({"limit": "2", "data-fields": "p"}, {"P": "P"})
    first = listing.listing_page(contacts, query, path="/contacts/v3", params={"limit": "2"})
    assert [i["contactId"] for i in first["_items"]] == [1, 2]
    assert first["_items"][0]["dataFields"] == {"P": 1}
    marker = first["_links"]["next"]["marker"]
    rest_query = listing.parse_query({"limit": "2", "marker": marker}, {"P": "P"})
    rest = listing.listing_page(contacts, rest_query, path="/contacts/v3", params={})
    assert [i["contactId"] for i in rest["_items"]] == [3]
    assert "dataFields" not in rest["_items"][0]
    assert "next" not in rest["_links"]
