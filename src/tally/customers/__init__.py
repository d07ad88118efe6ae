"""Customers: members with a loyalty account and guests known only from orders."""
