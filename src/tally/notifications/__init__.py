"""Notification emails: templates, unsubscribe links, message building and delivery.

Everything here is free of the database: `templates` renders and validates merchant-editable
Jinja2 templates in a sandbox, `unsubscribe` signs one-click unsubscribe tokens, `message`
assembles the MIME message with RFC 8058 headers, and `transport` delivers it over SMTP (or to
`.eml` files when no SMTP server is configured).
"""
