"""ASGI entry point for uvicorn: `tally.api.asgi:app`, configured from the environment."""

from tally.api.app import create_app
from tally.config import Settings

app = create_app(Settings())
