"""Application settings, read once at start-up and passed to whatever needs them."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "dev-insecure-change-me"  # noqa: S105 - the placeholder we refuse in production


class WorkerMode(StrEnum):
    """Where outbox messages and scheduled jobs are processed."""

    INPROCESS = "inprocess"  # a thread inside `tally serve` (the embedded default)
    SEPARATE = "separate"  # `tally worker` processes; the web process only writes outbox rows
    OFF = "off"  # nothing dispatches (tests that drive the dispatcher by hand)


class SmtpSecurity(StrEnum):
    """How the SMTP connection is secured."""

    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class ConfigurationError(RuntimeError):
    """Settings that Tally refuses to start with."""


class Settings(BaseSettings):
    """Every setting Tally reads, from `TALLY_*` environment variables or a `.env` file."""

    model_config = SettingsConfigDict(env_prefix="TALLY_", env_file=".env", extra="ignore")

    environment: str = Field(default="development", description="development, test or production")
    database_url: str = Field(default="sqlite:///./var/tally.db")
    secret_key: SecretStr = Field(default=SecretStr(PLACEHOLDER_SECRET))
    public_base_url: str = Field(default="http://127.0.0.1:8000")
    host: str = "127.0.0.1"
    port: int = 8000
    # Peers (IPs or CIDR networks, comma separated; "*" for any) whose X-Forwarded-For and
    # X-Forwarded-Proto `tally serve` believes. Empty trusts none: the client address is the
    # peer's, so a client cannot choose the address the admin's login limit counts.
    trusted_proxies: str = ""
    var_dir: Path = Path("./var")

    worker_mode: WorkerMode = WorkerMode.INPROCESS
    worker_poll_seconds: float = 1.0
    worker_batch_size: int = 50
    worker_lease_seconds: float = 300.0
    worker_max_attempts: int = 10
    worker_backoff_base_seconds: float = 2.0
    worker_backoff_max_seconds: float = 3600.0
    # Extra modules whose import registers outbox handlers or scheduled jobs (comma separated).
    plugin_modules: str = ""

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str = "loyalty@localhost"
    mail_send_per_second: float = 10.0

    # Largest CSV file an import accepts over HTTP (API and admin); the CLI reads any size.
    import_max_upload_mb: int = Field(default=1024, ge=1)
    # Rows per transaction of an import the workers run.
    import_batch_size: int = Field(default=20_000, ge=1)
    # A worker running an import renews its lease (and writes the progress) about every second;
    # a job whose lease ran out this long ago was left by a process that died, and another
    # worker takes it over.
    import_lease_seconds: float = Field(default=120.0, gt=0)

    # Storefront API requests a minute (bursts up to as many), per client address and per
    # signed-in shopper; 0 switches a limit off. Counted in memory, per web process.
    storefront_requests_per_minute_per_address: int = Field(default=600, ge=0)
    storefront_requests_per_minute_per_shopper: int = Field(default=120, ge=0)
    # How long a web process keeps a widget's settings (origins, secrets, on/off) before
    # reading them again; a change reaches every process within this time.
    storefront_settings_cache_seconds: float = Field(default=2.0, ge=0)

    dotdigital_base_url: str = "https://r1-api.dotdigital.com"
    dotdigital_calls_per_minute: int = 30

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        if "*" in entries:
            # uvicorn trusts everyone only for a lone "*"; in a list it would match no peer.
            return "*"
        normalised = []
        for entry in entries:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
            # uvicorn reads "10.1.0.5/16" strictly, fails, and would silently trust nobody.
            normalised.append(str(network) if "/" in entry else entry)
        return ",".join(normalised)

    @model_validator(mode="after")
    def _trim(self) -> Settings:
        self.public_base_url = self.public_base_url.rstrip("/")
        return self

    @property
    def is_development(self) -> bool:
        """True for local development and tests, where the placeholder secret is tolerated."""
        return self.environment in {"development", "test"}

    @property
    def is_sqlite(self) -> bool:
        """True when the database is SQLite (the embedded default)."""
        return self.database_url.startswith("sqlite")

    def check_for_start(self) -> None:
        """Refuse settings that are unsafe for the environment we run in."""
        secret = self.secret_key.get_secret_value()
        if not self.is_development and (secret == PLACEHOLDER_SECRET or len(secret) < 32):
            raise ConfigurationError(
                "TALLY_SECRET_KEY is the development placeholder or shorter than 32 characters; "
                f"set a random secret before running with TALLY_ENVIRONMENT={self.environment}"
            )

    @property
    def mail_dir(self) -> Path:
        """Where emails are written as .eml files when no SMTP server is configured."""
        return self.var_dir / "mail"
