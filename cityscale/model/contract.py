"""The model artifact's contract: what the weights expect and what they were trained on.

Stored as ``contract.json`` beside ``model.pt``. Serving, backtests and the registry read only
this file and the weights, never the training code.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

CONTRACT_FILE = "contract.json"
WEIGHTS_FILE = "model.pt"
CONTRACT_VERSION = 2  # 2: four-week window, calendar flags, calibrated band


class ModelContract(BaseModel):
    contract_version: int = CONTRACT_VERSION
    architecture: str = "quantile-mlp"
    # Members whose quantiles the forecast averages; artifacts from before the LightGBM member hold only the MLP.
    members: list[str] = ["mlp"]
    input_window: int
    horizon: int
    quantiles: list[float]
    calendar_features: list[str]
    in_dim: int
    hidden_size: int
    dropout: float
    cities: list[str]
    sensors_seen: list[str]
    training_start: str
    training_end: str
    n_train_examples: int
    val_loss: float
    created_at: str

    def save(self, directory: str | Path) -> None:
        Path(directory, CONTRACT_FILE).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> ModelContract:
        contract = cls.model_validate_json(Path(directory, CONTRACT_FILE).read_text())
        if contract.contract_version != CONTRACT_VERSION:
            raise ValueError(
                f"model in {directory} has contract version {contract.contract_version}; this code reads "
                f"version {CONTRACT_VERSION}: retrain it (make run) or serve it with the release that trained it"
            )
        return contract
