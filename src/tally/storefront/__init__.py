"""The shopper's side of a merchant's program: the storefront widget's settings and API rules.

`orm` holds one `StorefrontSettings` row per merchant (public widget id, encrypted signing
secret, allowed store origins, appearance); `service` creates and changes it; `appearance` is
the pure model of what the merchant may set; `identity` verifies a shopper's signature (HMAC
or a short-lived JWT) without I/O; `shopper` finds or enrols the signed-in shopper and serves
what they may read and do; `program_view` is the program as a guest sees it; `limits` is the
in-process rate limiter.
"""
