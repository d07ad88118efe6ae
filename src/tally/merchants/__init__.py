"""Merchants (tenants), their API keys and admin users."""
