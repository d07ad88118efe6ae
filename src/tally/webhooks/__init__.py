"""Signed outbound webhooks: merchants' endpoint subscriptions and the deliveries to them.

`service` manages endpoints (create, rotate the secret, enable, disable, delete) and turns
events into deliveries; `addresses` is the server-side request forgery guard; `signing` signs
and verifies; `sender` makes the one HTTP call of an attempt; `handlers` is the worker plugin.
"""
