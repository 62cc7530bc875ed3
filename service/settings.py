"""Service settings, read from the environment (prefix ECG_) or a .env file; defaults documented."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every field can be set as ECG_<NAME>, e.g. ECG_MODELS_DIR=/srv/models."""

    model_config = SettingsConfigDict(env_prefix="ECG_", env_file=".env", extra="ignore")

    models_dir: Path = Field(Path("models"), description="folder of artefact folders (each with card.json)")
    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 in containers)")
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug)$")
    default_model: str = Field("odenet", description="model used when a request names none")
    max_beats_per_request: int = Field(1024, ge=1, description="larger batches get a 422")
    min_tolerance: float = Field(1e-6, gt=0, description="smallest rtol/atol a request may ask for")
    max_tolerance: float = Field(1e-1, gt=0, description="largest rtol/atol a request may ask for")
    max_num_steps: int = Field(1000, ge=1, description="adaptive solver step budget per solve")
    min_step_size: float = Field(0.01, gt=0, description="smallest fixed-solver step (<= 100 steps)")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
