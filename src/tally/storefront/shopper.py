"""The signed-in shopper: found by the store's customer id, or enrolled on first sight; what
they may read (standing, activity) and do (redeem, set a birthday, claim an action).

Everything is scoped to one customer of one merchant: the caller's session is bound to the
widget's merchant, and every function takes the customer the signature named, never an id
from the request. Callers own the transaction.
"""

from __future__ import annotations

from datetime import date, datetime
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.customers import service as customers
from tally.customers.orm import Customer, CustomerState
from tally.db.base import utcnow
from tally.errors import Conflict, DomainError, NotFound
from tally.ledger import service as ledger
from tally.ledger.orm import LedgerEntry
from tally.program import redemptions, tiers
from tally.program import service as program_service
from tally.program.next_expiry import next_expiry
from tally.program.orm import Redemption
from tally.program.service import Program
from tally.storefront.identity import ShopperClaim
from tally.storefront.program_view import least_cost
from tally.storefront.shapes import (
    ActivityOut,
    ClaimedOut,
    CouponOut,
    ExpiryOut,
    MeOut,
    NextTierOut,
    RedeemedOut,
    ReferralOut,
    ShareOut,
    ShopperOut,
    TierRefOut,
)

INVALID_SIGNATURE = "the shopper's signature is not valid"
COUPONS_SHOWN = 20


class InvalidSignature(DomainError, status_code=401, title="Unauthorized"):
    """The shopper's identity could not be verified (one answer, whatever was wrong)."""


class EmailTaken(Conflict, title="Conflict"):
    """The signed email belongs to another of the store's customers."""


class BirthdaySet(Conflict, title="Conflict"):
    """The birthday was set before; only the merchant may change it."""


class NothingToClaim(Conflict, title="Conflict"):
    """The action gives nothing now (its limit is reached, or the program is not live)."""


def _by_external_id(session: Session, merchant_id: int, external_id: str) -> Customer | None:
    return session.scalar(
        select(Customer).where(
            Customer.merchant_id == merchant_id, Customer.external_id == external_id
        )
    )


def _link_or_enrol(session: Session, merchant_id: int, claim: ShopperClaim) -> Customer:
    assert claim.email is not None
    email = customers.normalize_email(claim.email)
    # Locked so two first requests cannot both turn the same guest into a member.
    existing = session.scalar(
        select(Customer)
        .where(Customer.merchant_id == merchant_id, Customer.email == email)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    if existing is None:
        return program_service.enroll_member(
            session, merchant_id=merchant_id, email=email, external_id=claim.customer_id
        ).customer
    if existing.external_id is not None and existing.external_id != claim.customer_id:
        raise EmailTaken("this email belongs to another customer of the store")
    if existing.external_id is None:
        existing.external_id = claim.customer_id
        existing.updated_at = utcnow()
        session.flush()
    if existing.state == CustomerState.GUEST:
        # The program's own enrolment: a guest becomes a member with the create-account points.
        program_service.enroll_member(session, merchant_id=merchant_id, email=email)
    return existing


def find_or_enrol(session: Session, *, merchant_id: int, claim: ShopperClaim) -> Customer:
    """The store customer the claim names; enrolled (create-account points) on first sight.

    A customer with the same email and no store id yet is linked to the store's id; one with
    another store id is refused (two store accounts cannot share one loyalty account).
    """
    found = _by_external_id(session, merchant_id, claim.customer_id)
    if found is not None:
        return found
    if not claim.email:
        # Only an email can enrol someone new; the token vouched for nobody Tally knows.
        raise InvalidSignature(INVALID_SIGNATURE)
    try:
        return _link_or_enrol(session, merchant_id, claim)
    except EmailTaken:
        raise
    except Conflict:
        # A concurrent first request enrolled the shopper (the unique email or store id
        # decided); its customer is this one.
        found = _by_external_id(session, merchant_id, claim.customer_id)
        if found is None:
            raise
        return found


# -- reading -------------------------------------------------------------------------------


def _share(link: str, store: str) -> ShareOut:
    text = quote(f"Join me at {store} and get a reward: {link}")
    url = quote(link, safe="")
    return ShareOut(
        email=f"mailto:?subject={quote(f'A reward from {store}')}&body={text}",
        facebook=f"https://www.facebook.com/sharer/sharer.php?u={url}",
        x=f"https://x.com/intent/post?text={text}",
        whatsapp=f"https://wa.me/?text={text}",
    )


def _tiers(
    session: Session, program: Program, customer: Customer, now: datetime
) -> tuple[TierRefOut | None, NextTierOut | None]:
    vip = program.settings.vip
    if not vip.enabled:
        return None, None
    held = next((t for t in vip.tiers if t.id == customer.vip_tier), None)
    value = program_service.tier_value(session, program, customer.id, now=now)
    progress = tiers.progress_to_next(vip.tiers, value, held=held)
    current = held or progress.current
    following = progress.next
    return (
        TierRefOut(id=current.id, name=current.name) if current else None,
        NextTierOut(
            id=following.id,
            name=following.name,
            threshold=following.threshold,
            remaining=progress.remaining,
            progress=progress.percent,
        )
        if following is not None and progress.remaining is not None
        else None,
    )


def _coupons(session: Session, customer: Customer) -> list[CouponOut]:
    # The newest few, without the count a page of the list would also ask for.
    rows = session.scalars(
        select(Redemption)
        .where(
            Redemption.merchant_id == customer.merchant_id, Redemption.customer_id == customer.id
        )
        .order_by(Redemption.id.desc())
        .limit(COUPONS_SHOWN)
    )
    return [
        CouponOut(
            code=r.coupon_code,
            reward_id=r.reward_id,
            reward_title=r.reward_name,
            used=False,
            issued_at=r.created_at,
            expires_at=r.expires_at,
        )
        for r in rows
    ]


def standing(
    session: Session,
    *,
    program: Program,
    customer: Customer,
    public_base_url: str,
    now: datetime | None = None,
) -> MeOut:
    """`GET /me`'s body: balance, expiry, tier progress, referral link, rewards, coupons."""
    now = now or utcnow()
    expiring = next_expiry(session, program, customer)
    tier, next_tier = _tiers(session, program, customer, now)
    referral = None
    if program.settings.referral.enabled:
        link = f"{public_base_url}/r/{customer.referral_code}"
        referral = ReferralOut(
            code=customer.referral_code, link=link, share=_share(link, program.merchant.name)
        )
    balance = customer.points_balance
    return MeOut(
        customer=ShopperOut(
            first_name=customer.first_name,
            email=customer.email,
            points_balance=balance,
            birthday=customer.birthday,
            birthday_editable=customer.birthday is None,
            next_expiry=ExpiryOut(date=expiring.expires_at, points=expiring.points)
            if expiring.expires_at is not None
            else None,
            tier=tier,
            next_tier=next_tier,
            referral=referral,
        ),
        affordable_reward_ids=[
            r.id for r in program.settings.rewards if r.enabled and least_cost(r) <= balance
        ],
        coupons=_coupons(session, customer),
    )


def _activity_out(entry: LedgerEntry) -> ActivityOut:
    return ActivityOut(
        id=entry.id,
        kind=entry.kind,
        points=entry.points,
        reason=entry.reason,
        created_at=entry.created_at,
    )


def activity(
    session: Session, *, customer: Customer, limit: int, offset: int
) -> tuple[list[ActivityOut], int]:
    """A page of the shopper's point movements, newest first, and their count."""
    entries, total = ledger.list_entries(
        session, customer_id=customer.id, limit=limit, offset=offset
    )
    return [_activity_out(e) for e in entries], total


# -- doing ---------------------------------------------------------------------------------


def redeem(
    session: Session,
    *,
    customer: Customer,
    reward_id: str,
    points: int | None,
    idempotency_key: str,
) -> RedeemedOut:
    """Spend the shopper's points on a reward: the admin API's `redeem_reward`, same rules.

    The key is the shopper's own (`storefront:<customer id>:<key>`), so two shoppers who send
    the same Idempotency-Key never meet, and neither meets the merchant's API keys.
    """
    redemption = redemptions.redeem_reward(
        session,
        merchant_id=customer.merchant_id,
        customer_id=customer.id,
        reward_id=reward_id,
        points=points,
        idempotency_key=shopper_key(customer, idempotency_key),
    )
    session.refresh(customer, ["points_balance"])
    return RedeemedOut(
        code=redemption.coupon_code,
        reward_id=redemption.reward_id,
        points_spent=redemption.points_spent,
        points_balance=customer.points_balance,
    )


def shopper_key(customer: Customer, key: str) -> str:
    """An Idempotency-Key of the shopper's, in a namespace no other caller writes to."""
    return f"storefront:{customer.id}:{key}"


def set_birthday(session: Session, *, customer: Customer, birthday: date) -> Customer:
    """Record the shopper's birthday, once; the birthday rule's own conditions then apply."""
    # Locked (NO KEY UPDATE, as the ledger locks customers) and read afresh, so two concurrent
    # first settings cannot both pass the check.
    locked = session.scalar(
        select(Customer)
        .where(Customer.id == customer.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    assert locked is not None
    if locked.birthday is not None:
        raise BirthdaySet("the birthday is already set; ask the store to change it")
    return customers.update_customer(
        session, merchant_id=customer.merchant_id, customer_id=customer.id, birthday=birthday
    )


def claim_action(
    session: Session, *, program: Program, customer: Customer, action_id: str
) -> ClaimedOut:
    """Award a custom action the merchant lets shoppers claim, within its limit."""
    action = program.settings.custom_action(action_id)
    if action is None or not action.enabled or not action.storefront_claimable:
        raise NotFound(f"no action {action_id!r} can be claimed from the storefront")
    # The limit is counted from earlier awards: holding the customer row makes two concurrent
    # claims count one after the other. NO KEY UPDATE, as the ledger itself locks it.
    session.scalar(
        select(Customer).where(Customer.id == customer.id).with_for_update(key_share=True)
    )
    posting = program_service.award(
        session,
        program,
        customer,
        rule_id=f"custom:{action.id}",
        points=action.points,
        idempotency_key=f"action:{action.id}:{shopper_key(customer, utcnow().isoformat())}",
        reason=action.name,
        limit=action.limit,
        email=action.send_email,
    )
    if posting is None:
        raise NothingToClaim(f"'{action.name}' gives no more points now (its limit is reached)")
    session.refresh(customer, ["points_balance"])
    return ClaimedOut(points_awarded=posting.entry.points, points_balance=customer.points_balance)
