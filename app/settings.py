"""Settings, validated once at boot and passed in (never imported as a global)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Groq's Llama 3 models became enterprise-only on 2026-08-16; gpt-oss works with a new free key.
DEFAULT_GROQ_MODEL = "openai/gpt-oss-120b"
DEFAULT_SUMMARY_MODEL = "openai/gpt-oss-20b"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a realtime chat. Answer clearly and concisely. "
    "Use the tools you are given when they help; never invent tool results."
)


def _split_list(value: object) -> object:
    """Accept `a,b,c` from the environment as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of the server; each one is documented in `.env.example` and the README."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Store
    database_url: str = "sqlite:///./data/app.db"

    # Model
    groq_api_key: SecretStr | None = None
    groq_base_url: str | None = None
    groq_model: str = DEFAULT_GROQ_MODEL
    summary_model: str = DEFAULT_SUMMARY_MODEL
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    llm_timeout_s: float = Field(default=30.0, gt=0)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_max_completion_tokens: int = Field(default=4096, ge=16)

    # Conversation
    max_tool_rounds: int = Field(default=5, ge=1, le=50)
    tool_timeout_s: float = Field(default=10.0, gt=0)
    max_message_chars: int = Field(default=32_000, ge=1)
    ws_max_bytes: int = Field(default=1_048_576, ge=1024)
    max_messages_per_minute: int = Field(default=120, ge=1)
    resume_wait_s: float = Field(default=30.0, gt=0)
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Background work and writes
    write_flush_ms: float = Field(default=20.0, ge=0)
    write_batch_max: int = Field(default=500, ge=1)
    summary_concurrency: int = Field(default=2, ge=1)
    shutdown_grace_s: float = Field(default=10.0, ge=0)

    # Auth
    auth_mode: Literal["none", "api_key"] = "none"
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    _split_origins = field_validator("allowed_origins", "api_keys", mode="before")(_split_list)

    @field_validator("groq_api_key", "groq_base_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `GROQ_API_KEY=` in .env means "not set", not "an empty key".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _known_database_scheme(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError("DATABASE_URL must look like sqlite:///path/to/app.db")
        return value

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

    def sqlite_path(self) -> str:
        """The file behind `DATABASE_URL` (`:memory:` stays as it is)."""
        return self.database_url.removeprefix("sqlite:///")


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
