"""The merchant's admin web UI: server-rendered pages (Jinja2 + htmx) under /admin.

Include ``router`` in the application; it serves its own static files under /admin/static.
"""

from tally.admin.routes import router

__all__ = ["router"]
