"""Settings, validated once at boot and passed in (never imported as a global)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.services.mcp.config import McpConfig, McpConfigError, load_mcp_config

# Groq's Llama 3 models became enterprise-only on 2026-08-16; gpt-oss works with a new free key.
DEFAULT_GROQ_MODEL = "openai/gpt-oss-120b"
DEFAULT_SUMMARY_MODEL = "openai/gpt-oss-20b"
DEFAULT_SQLITE_URL = "sqlite:///./data/app.db"
# The names a browser uses for a server on this machine; production lists its own domain.
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")
_DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a realtime chat. Answer clearly and concisely. "
    "Use the tools you are given when they help; never invent tool results."
)


def _split_list(value: object) -> object:
    """Accept `a,b,c` from the environment as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _allowed_host(entry: str) -> str:
    """An ALLOWED_HOSTS entry as it is matched: lowercase, IPv6 without brackets."""
    name = entry.lower().removeprefix("[").removesuffix("]").removesuffix(".")
    if name == "*" or (name.startswith("*.") and _is_host_name(name[2:])):
        return name
    if _is_host_name(name) or _is_ip_address(name):
        return name
    raise ValueError(
        f"ALLOWED_HOSTS takes host names without scheme or port, like chat.example.com, "
        f"*.example.com or ::1 (got {entry!r})"
    )


def _is_host_name(name: str) -> bool:
    labels = name.split(".")
    return all(label and all(c.isalnum() or c in "-_" for c in label) for label in labels)


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Settings(BaseSettings):
    """Every setting of the server; each one is documented in `.env.example` and the README."""

    # An empty value (`GROQ_API_KEY=` in .env) means "not set", not "the empty string".
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    # Store: DATABASE_URL wins; else SUPABASE_URL + SUPABASE_KEY; else the embedded SQLite.
    database_url: str | None = None
    supabase_url: str | None = None
    supabase_key: SecretStr | None = None
    database_pool_min: int = Field(default=1, ge=0)
    database_pool_max: int = Field(default=10, ge=1)
    # Off is needed behind a transaction-mode pooler (Supabase's port 6543 turns it off by itself).
    database_statement_cache: bool = True
    database_timeout_s: float = Field(default=10.0, gt=0)

    # Model: `auto` is Groq when GROQ_API_KEY is set, else the local model (docs/models.md).
    llm_provider: Literal["auto", "groq", "openai", "local"] = "auto"
    groq_api_key: SecretStr | None = None
    groq_base_url: str | None = None
    groq_model: str = DEFAULT_GROQ_MODEL
    groq_fallback_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    local_model_path: str | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None
    summary_model: str = DEFAULT_SUMMARY_MODEL
    # Model that names sessions after their first exchange; unset = SUMMARY_MODEL.
    title_model: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    llm_timeout_s: float = Field(default=30.0, gt=0)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_max_completion_tokens: int = Field(default=4096, ge=16)
    # Context budget of a chat request; unset = the model's window minus the answer's room.
    context_max_tokens: int | None = Field(default=None, ge=256)
    # Window of the summary model; unset = its known window (summaries go in parts beyond it).
    summary_window_tokens: int | None = Field(default=None, ge=256)

    # Conversation
    max_tool_rounds: int = Field(default=5, ge=1, le=50)
    tool_timeout_s: float = Field(default=10.0, gt=0)
    # A JSON file of MCP servers whose tools the model may call (docs/tools.md); read at boot.
    mcp_config: Annotated[McpConfig | None, NoDecode] = None
    # Tools whose calls wait for the person's approval, as glob patterns (`update_*`), besides
    # those that declare it (docs/tools.md); MCP tools by their `<server>__<tool>` name.
    tools_require_approval: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How long a call waits for its approval, connected or not, before it is denied.
    tool_approval_timeout_s: float = Field(default=600.0, gt=0)
    # `enqueue`d messages that may wait per session; one more gets `queue_full`.
    max_queued_messages: int = Field(default=3, ge=1, le=100)
    max_message_chars: int = Field(default=32_000, ge=1)
    ws_max_bytes: int = Field(default=1_048_576, ge=1024)
    # Seconds a send may wait for a client that stopped reading before it is dropped.
    ws_send_timeout_s: float = Field(default=10.0, gt=0)
    max_messages_per_minute: int = Field(default=120, ge=1)
    resume_wait_s: float = Field(default=30.0, gt=0)
    # Server processes on one port (`python -m app.serve`, `make run`); each is an instance.
    workers: int = Field(default=1, ge=1, le=64)
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Host names the `Host` header may carry (DNS rebinding); `*` = any; ports are ignored.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_HOSTS)
    )

    # Background work and writes
    write_flush_ms: float = Field(default=20.0, ge=0)
    write_batch_max: int = Field(default=500, ge=1)
    # Events held while the store is unreachable; at the bound new messages are refused.
    write_buffer_max: int = Field(default=10_000, ge=1)
    # A user message not committed within this is answered `store_unavailable` (retryable).
    store_commit_timeout_s: float = Field(default=5.0, gt=0)
    # Local state of this server: per-process slots, and the spill file of events the store
    # could not take at shutdown (replayed at the next start).
    state_dir: str = "./data"
    summary_concurrency: int = Field(default=2, ge=1)
    # Several instances on one database: a session's lease expires this long after its
    # instance stopped renewing it (died); renewed every third of it.
    lease_ttl_s: float = Field(default=15.0, gt=0)
    # How often every instance looks for summaries and titles left to do (by any instance).
    summary_poll_s: float = Field(default=10.0, gt=0)
    # A summary or title claimed this long ago and not finished was left by an instance that died.
    summary_claim_timeout_s: float = Field(default=120.0, gt=0)
    # First wait before a failed summary or title is tried again (doubling, five tries in all).
    summary_retry_s: float = Field(default=5.0, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)

    # Several instances: the message bus that lets a resume on any instance join a response
    # running on another (docs/deployment.md). Unset = joins work within one instance only.
    redis_url: str | None = None
    # Frames kept per running response in its Redis stream (one answer is a few thousand).
    redis_stream_maxlen: int = Field(default=20_000, ge=100)
    # How long a response's stream stays in Redis after the response ended.
    redis_stream_ttl_s: float = Field(default=60.0, gt=0)
    # Frames waiting to be published; when Redis is slow or down, more are dropped (and joins
    # elsewhere wait for the stored result instead), never the running response slowed.
    redis_buffer_max: int = Field(default=10_000, ge=1)

    # Usage limits per owner (unset = unlimited), counted in the store (docs/operations.md).
    owner_tokens_per_day: int | None = Field(default=None, ge=1)
    owner_max_live_sessions: int | None = Field(default=None, ge=1)
    owner_sessions_per_hour: int | None = Field(default=None, ge=1)
    # New WebSocket connections a minute per client address (unset = unlimited), per instance.
    connections_per_minute_per_ip: int | None = Field(default=None, ge=1)
    # Proxies (CIDRs) whose X-Forwarded-For names the client; other peers' header is ignored.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Sessions idle (no event) longer than this many days are deleted (unset = kept forever);
    # empty sessions older than a day always are.
    retention_days: float | None = Field(default=None, gt=0)
    # How often an instance sweeps old sessions away, and how many it deletes per statement.
    retention_sweep_s: float = Field(default=600.0, gt=0)
    retention_batch: int = Field(default=100, ge=1, le=10_000)

    # Auth
    auth_mode: Literal["none", "api_key", "supabase"] = "none"
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # AUTH_MODE=supabase: HS256 tokens of older projects; asymmetric ones use the JWKS.
    supabase_jwt_secret: SecretStr | None = None
    # Unset = {SUPABASE_URL}/auth/v1/.well-known/jwks.json.
    supabase_jwks_url: str | None = None

    # Traces (docs/operations.md): exported over OTLP/HTTP when an endpoint is set, else off.
    # The standard OpenTelemetry names; other OTEL_* variables are read by the SDK itself.
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_exporter_otlp_headers: SecretStr | None = None
    otel_service_name: str | None = None
    # Prompt, answer, tool arguments and results on spans: off, they may hold personal data.
    otel_capture_content: bool = False

    # Freeze the objects made at start out of the garbage collector's full collections (one
    # server a process; tests that start many servers in one process turn it off).
    gc_freeze: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # `json`: one JSON object a line with session_id and response_id; `text`: for humans.
    log_format: Literal["json", "text"] = "json"

    _split_origins = field_validator(
        "allowed_origins",
        "allowed_hosts",
        "api_keys",
        "groq_fallback_models",
        "trusted_proxies",
        "tools_require_approval",
        mode="before",
    )(_split_list)

    @field_validator("mcp_config", mode="before")
    @classmethod
    def _read_mcp_config(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return load_mcp_config(value)
        except McpConfigError as e:
            raise ValueError(str(e)) from e

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as e:
                raise ValueError(
                    f"TRUSTED_PROXIES takes addresses or CIDRs like 10.0.0.0/8 (got {entry!r})"
                ) from e
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names_only(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("ALLOWED_HOSTS must name at least one host (or * for any)")
        return [_allowed_host(entry) for entry in value]

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None  # `REDIS_URL=` means "no message bus"
        if isinstance(value, str) and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("groq_api_key", "groq_base_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `GROQ_API_KEY=` in .env means "not set", not "an empty key".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "local_model_path", "openai_base_url", "openai_api_key", "openai_model", mode="before"
    )
    @classmethod
    def _blank_model_setting_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("local_model_path")
    @classmethod
    def _local_model_is_a_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"no such file: {value} (give the path of a .gguf model file)")
        return value

    @model_validator(mode="after")
    def _openai_needs_a_model(self) -> Settings:
        if self.llm_provider == "openai" and self.openai_model is None:
            raise ValueError(
                "LLM_PROVIDER=openai needs OPENAI_MODEL (the model name your server serves)"
            )
        return self

    @field_validator("database_url", "supabase_url", "supabase_key", mode="before")
    @classmethod
    def _blank_store_setting_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _known_database_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_DATABASE_SCHEMES):
            raise ValueError(
                "DATABASE_URL must look like sqlite:///path/to/app.db or "
                "postgresql://user:password@host:5432/dbname"
            )
        return value

    @field_validator("supabase_url")
    @classmethod
    def _supabase_url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("SUPABASE_URL must look like https://<project-ref>.supabase.co")
        return value.rstrip("/")

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _otlp_endpoint_is_http(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"must be an http(s) URL like http://collector:4318 (got {value!r})")
        return value

    @model_validator(mode="after")
    def _supabase_needs_both(self) -> Settings:
        if self.database_url is None and (self.supabase_url is None) != (self.supabase_key is None):
            raise ValueError(
                "SUPABASE_URL and SUPABASE_KEY go together: set both (the key is the project's "
                "service role / secret key), or neither (AUTH_MODE=supabase with another store: "
                "set DATABASE_URL)"
            )
        if self.database_pool_min > self.database_pool_max:
            raise ValueError("DATABASE_POOL_MIN must not exceed DATABASE_POOL_MAX")
        return self

    @field_validator("api_keys")
    @classmethod
    def _keys_not_blank(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not key.get_secret_value() for key in value):
            raise ValueError("API_KEYS must not contain empty keys")
        return value

    @model_validator(mode="after")
    def _keys_when_api_key_auth(self) -> Settings:
        if self.auth_mode == "api_key" and not self.api_keys:
            raise ValueError("AUTH_MODE=api_key needs at least one key in API_KEYS")
        return self

    @field_validator("supabase_jwt_secret", "supabase_jwks_url", mode="before")
    @classmethod
    def _blank_jwt_setting_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("supabase_jwks_url")
    @classmethod
    def _jwks_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError("SUPABASE_JWKS_URL must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _issuer_when_supabase_auth(self) -> Settings:
        # The issuer ({SUPABASE_URL}/auth/v1) is checked on every token, whatever signs it.
        if self.auth_mode == "supabase" and self.supabase_url is None:
            raise ValueError(
                "AUTH_MODE=supabase needs SUPABASE_URL (https://<project-ref>.supabase.co): "
                "tokens must come from its /auth/v1"
            )
        return self

    def jwks_url(self) -> str:
        """Where the project's public signing keys are (SUPABASE_JWKS_URL, else SUPABASE_URL's)."""
        return self.supabase_jwks_url or f"{self.supabase_url}/auth/v1/.well-known/jwks.json"

    def store_kind(self) -> Literal["sqlite", "postgresql", "supabase"]:
        """Which store the settings select (DATABASE_URL, else Supabase, else SQLite)."""
        if self.database_url is not None:
            return "sqlite" if self.database_url.startswith("sqlite:///") else "postgresql"
        return "supabase" if self.supabase_url is not None else "sqlite"

    def secret_values(self) -> list[str]:
        """Every configured secret, so that logging can redact them."""
        secrets = [
            self.groq_api_key,
            self.openai_api_key,
            self.supabase_key,
            self.supabase_jwt_secret,
            self.otel_exporter_otlp_headers,
            *self.api_keys,
        ]
        values = [secret.get_secret_value() for secret in secrets if secret is not None]
        if self.mcp_config is not None:
            values += self.mcp_config.secret_values()
        return values

    def sqlite_path(self) -> str:
        """The SQLite file in use (`:memory:` stays as it is); the default without DATABASE_URL."""
        url = self.database_url or DEFAULT_SQLITE_URL
        return url.removeprefix("sqlite:///")


class SettingsError(Exception):
    """A setting has a wrong value; the message names the environment variable."""


def load_settings() -> Settings:
    """Read the environment (and `.env`), or stop with messages that name each bad variable."""
    try:
        return Settings()
    except ValidationError as e:
        problems = [
            f"{'.'.join(str(part) for part in item['loc']).upper()}: {item['msg']}"
            for item in e.errors(include_url=False)
        ]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from e
