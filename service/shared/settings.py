"""Configuration from the environment (prefix RLHF_), shared by the API and the worker.

The defaults are the embedded stack: SQLite for the store and kombu's SQLAlchemy transport for
the broker, both files under .rlhf/, so a laptop needs no server. Production sets Postgres and
Redis URLs (see docker-compose.yml).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_HOME = Path(".rlhf")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RLHF_", env_file=".env", extra="ignore",
                                      protected_namespaces=())

    database_url: str = f"sqlite:///{_HOME}/rlhf.db"
    broker_url: str = f"sqla+sqlite:///{_HOME}/broker.db"
    queue: str = "rlhf-jobs"  # Celery queue; one per GPU type when scaling out
    artifacts_dir: Path = _HOME / "artifacts"
    model_cache_dir: Path = _HOME / "models"
    model_registry: Path | None = None  # operator's YAML/JSON of extra models

    # Shared artifact store (service/shared/artifact_s3.py). Unset bucket: artifacts_dir is the only copy.
    # Credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID, ~/.aws, roles), never from here.
    artifacts_s3_bucket: str | None = None
    artifacts_s3_prefix: str = ""  # keys become {prefix}/files/..., {prefix}/jobs/...
    artifacts_s3_endpoint_url: str | None = None  # MinIO, Ceph, R2...; unset = AWS
    artifacts_s3_region: str | None = None
    # With a bucket: a worker deletes its local copy of a job once the job has ended. Only for
    # workers whose directory no API process reads (an API serving a download from it would see
    # the files go).
    artifacts_clean_local: bool = False

    # Worker behaviour.
    lease_seconds: int = 120  # a job lease not renewed for this long is considered dead
    max_attempts: int = 3  # a job that crashes its worker this often ends failed
    resend_queued_seconds: int = 900  # a queued job sent this long ago is sent again (lost messages)
    task_time_limit: int = 7 * 24 * 3600
    db_retry_seconds: float = 60.0  # how long a worker write waits out a database outage (dbretry.py)
    # Ranks each job trains on (torch's elastic launcher; one per GPU): worker/ranks.py.
    train_processes: int = Field(1, ge=1, le=64)

    # Access. With no active API key in the database the API runs open as project "default";
    # `auth_required` refuses requests without a key even then (a production install sets it).
    auth_required: bool = False

    # Limits (README, "Operators"). 0 turns a limit off.
    max_upload_bytes: int = 512 * 1024 * 1024
    max_json_body_bytes: int = 1024 * 1024  # every request body other than a file upload
    max_examples_per_file: int = 1_000_000
    # Uploads in progress (spooled to disk, validated, stored); beyond them 429 (per key) or 503
    # (this process), answered before the body is read (service/api/limits.py, UploadGate).
    max_concurrent_uploads_per_key: int = 2
    max_concurrent_uploads: int = 4  # per API process
    max_concurrent_jobs_per_project: int = 4  # more stay `queued` until one finishes
    quota_retry_seconds: float = 15.0  # a job held back by that limit is sent again after this
    # Moving windows per API key (open mode, no keys: not limited; service/api/limits.py): at most
    # rate_limit_per_minute in any 60 s and, of those, rate_limit_burst in any one second.
    rate_limit_per_minute: int = 600
    rate_limit_burst: int = 60
    # "memory": the windows live in each API process. "redis": in RLHF_RATE_LIMIT_REDIS_URL (or the
    # broker, if it is Redis), shared by every process and replica.
    rate_limit_backend: str = "memory"
    rate_limit_redis_url: str | None = None

    # Chat completions (service/api/routes/chat.py): an OpenAI-protocol inference server the API
    # forwards to, vLLM's in production, `python -m worker.serve` in the embedded stack. Unset: 503.
    inference_url: str | None = None

    # Operations.
    log_level: str = "INFO"
    log_format: str = "json"  # json (one object per line) or text
    sse_poll_seconds: float = 0.5  # how often a live event stream looks for new rows
    sse_keepalive_seconds: float = 15.0
    sse_max_streams_per_key: int = 100  # open event streams of one key in one API process; 429 beyond
    sse_db_connections: int = 2  # the streams' own pool per API process (never the requests' pool)


@lru_cache
def get_settings() -> Settings:
    return Settings()
