"""Integrations with external marketing and messaging systems."""
