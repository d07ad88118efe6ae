"""Dotdigital integration: HTTP client, data-field mapping and contact formatting."""
