"""The ``[plugins.webhook]`` configuration section."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from yarl import URL


def check_url(url: str) -> str:
    """Only absolute http(s) URLs: anything else would fail on every attempt, so say so at startup."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    return url


WebhookUrl = Annotated[str, AfterValidator(check_url)]


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    urls: list[WebhookUrl] = Field(default_factory=list,
                                   description="Receivers of every matching event; empty leaves the plugin idle.")
    # repr=False keeps the key out of logged or printed config objects
    key: str = Field("", repr=False, description="HMAC-SHA256 signing key; empty sends no signature header.")
    events: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["*"], description="Event name globs to deliver, e.g. \"room.*\".")
    timeout_s: float = Field(5, gt=0, description="An attempt without an answer in this time fails.")
    retry_interval_s: float = Field(10, gt=0, description="Retry period after the immediate retry.")
    give_up_after_s: float = Field(60, ge=0, description="No attempt starts later than this after the first.")
    max_queue: int = Field(10000, ge=1, description="Events waiting per URL; beyond it the oldest is dropped.")
