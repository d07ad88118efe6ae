"""The loyalty program's rules: how points are earned, spent, tiered, referred and expired.

Everything here is pure: no database, no clock, no I/O. Callers pass the current time, the
merchant's timezone and whatever history a rule needs, and store the results themselves.

- `settings`: the merchant's program configuration (pydantic, stored as JSON with a `version`).
- `earning`: order points, refund clawbacks, action limits, birthdays.
- `rewards`: redemption quotes, coupon codes, uploaded code pools.
- `tiers`: VIP windows, tier selection, tier changes and entry rewards.
- `referrals`: fraud checks, qualification and milestones.
- `expiry`: rolling and per-grant expiry, spend allocation, reminders.
"""
