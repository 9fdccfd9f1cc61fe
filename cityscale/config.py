"""One typed settings object for the whole project.

Every value can be overridden from the environment (``CITYSCALE_<FIELD>``; ports also honour the
plain ``HTTP_PORT``/``GRPC_PORT`` the Makefile documents), so components, servers and the CLI read
their configuration from one place instead of scattering constants.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DATA = Path(__file__).parent / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYSCALE_", extra="ignore")

    # Where things live. Local paths and file:// or gs:// URIs are all accepted (fsspec).
    workdir: Path = Path("local_outputs")
    store_uri: str = ""  # raw zone root; default: <workdir>/store
    registry_uri: str = ""  # model registry root; default: <workdir>/registry
    pipeline_root: str = ""  # kfp.local pipeline root; default: <workdir>/pipeline_root
    sample_data: Path = PACKAGE_DATA / "melbourne_sample.parquet"

    # The container image every component runs in (the compiled YAML points at it).
    image: str = "cityscale:dev"

    # Cluster resources of the train task (ignored by kfp.local).
    gpu_node_type: str = "nvidia-l4"  # GKE accelerator label of the GPU node pool
    train_gpus: int = 1
    train_cpu_limit: str = "8"
    train_memory_limit: str = "32G"

    # Forecast contract defaults (the trained model artifact records the values it used).
    model_name: str = "cityscale"
    input_window: int = 168
    horizon: int = 24
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    origin_stride_hours: int = 6
    min_history_fraction: float = 0.5

    # Training.
    seed: int = 42
    max_epochs: int = 8
    batch_size: int = 512
    learning_rate: float = 2e-3
    hidden_size: int = 256
    dropout: float = 0.1

    # Serving.
    http_port: int = Field(8080, validation_alias=AliasChoices("HTTP_PORT", "CITYSCALE_HTTP_PORT"))
    grpc_port: int = Field(8081, validation_alias=AliasChoices("GRPC_PORT", "CITYSCALE_GRPC_PORT"))
    max_batch_sensors: int = 512

    @property
    def resolved_store_uri(self) -> str:
        return self.store_uri or str((self.workdir / "store").absolute())

    @property
    def resolved_registry_uri(self) -> str:
        return self.registry_uri or str((self.workdir / "registry").absolute())

    @property
    def resolved_pipeline_root(self) -> str:
        return self.pipeline_root or str((self.workdir / "pipeline_root").absolute())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
