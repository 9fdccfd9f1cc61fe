"""Loading a model artifact and producing quantile forecasts from raw history windows.

Needs only numpy, pandas and torch: this is what the KServe predictor and the backtests call.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cityscale import storage
from cityscale.calendar import calendar_features
from cityscale.model.boosted import BoostedQuantiles
from cityscale.model.calibration import EnsembleCalibration
from cityscale.model.contract import WEIGHTS_FILE, ModelContract
from cityscale.model.inputs import encode
from cityscale.model.network import QuantileMLP


class Forecaster:
    """The model's members (the MLP and, when trained, the LightGBM boosters) behind one ``predict``."""

    def __init__(
        self,
        contract: ModelContract,
        net: QuantileMLP | None,
        version: str = "unregistered",
        boosters: BoostedQuantiles | None = None,
        calibration: EnsembleCalibration | None = None,
    ):
        if net is None and boosters is None:
            raise ValueError("a forecaster needs at least one member")
        self.contract = contract
        self.net = net.eval() if net is not None else None
        self.boosters = boosters
        self.version = version
        self.calibration = calibration

    @classmethod
    def load(cls, uri: str | Path, version: str = "unregistered", members: Sequence[str] | None = None) -> Forecaster:
        """Load from a local directory or any fsspec directory URI (gs://, file://).

        ``members`` picks a subset of the artifact's members (ablations: the MLP or the boosters alone).
        """
        local = Path(str(uri))
        if not local.is_dir():
            local = storage.download_dir(str(uri), tempfile.mkdtemp(prefix="cityscale-model-"))
        return cls.from_files(local, ModelContract.load(local), version, members)

    @classmethod
    def from_files(
        cls,
        local: Path,
        contract: ModelContract,
        version: str = "unregistered",
        members: Sequence[str] | None = None,
    ) -> Forecaster:
        """The members' files in ``local`` described by ``contract``.

        Why apart from ``load``: training calibrates the ensemble before it writes the contract, which marks a
        complete artifact, so it passes the contract in memory.
        """
        use = list(members) if members is not None else contract.members
        unknown = sorted(set(use) - set(contract.members))
        if unknown or not use:
            raise ValueError(f"model in {local} has members {contract.members}; cannot use {use}")
        net = None
        if "mlp" in use:
            net = QuantileMLP(
                contract.in_dim, contract.horizon, len(contract.quantiles), contract.hidden_size, contract.dropout
            )
            net.load_state_dict(torch.load(local / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        boosters = None
        if "lightgbm" in use:
            boosters = BoostedQuantiles(local, contract.quantiles, contract.calendar_features)
        # Weights and band were fit for the whole ensemble: a member alone (an ablation) is reported uncalibrated.
        calibration = EnsembleCalibration.load(local) if set(use) == set(contract.members) else None
        return cls(contract, net, version, boosters, calibration)

    @property
    def horizon(self) -> int:
        return self.contract.horizon

    @property
    def input_window(self) -> int:
        return self.contract.input_window

    def calendar(self, starts: Sequence[pd.Timestamp], cities: Sequence[str]) -> np.ndarray:
        """Calendar covariates [N, H, K] for the hours each forecast covers."""
        h = self.horizon
        stamps = pd.DatetimeIndex([s + pd.Timedelta(hours=k) for s in starts for k in range(h)])
        out = np.empty((len(starts), h, len(self.contract.calendar_features)), dtype=np.float32)
        cities_arr = np.asarray(cities)
        for city in np.unique(cities_arr):
            sel = np.flatnonzero(cities_arr == city)
            idx = (sel[:, None] * h + np.arange(h)[None, :]).ravel()
            out[sel] = calendar_features(stamps[idx], str(city)).reshape(len(sel), h, -1)
        return out

    @torch.inference_mode()
    def predict(self, history: np.ndarray, starts: Sequence[pd.Timestamp], cities: Sequence[str]) -> np.ndarray:
        """Quantile forecasts [N, H, Q] in counts (>= 0) from history [N, L] (NaN = missing)."""
        if history.ndim != 2 or history.shape[1] != self.input_window:
            raise ValueError(f"history must be [N, {self.input_window}], got {list(history.shape)}")
        if not (len(history) == len(starts) == len(cities)):
            raise ValueError("history, starts and cities must have the same length")
        calendar = self.calendar(starts, cities)
        members, scale = self.members_scaled(history, calendar)
        if self.calibration is None:
            # The members' quantiles averaged (Vincentization); each member's are ordered, so their mean is too.
            scaled = np.mean(members, axis=0)
        else:
            scaled = self.calibration.apply(self.calibration.combine(members), np.asarray(cities))
        return np.clip(scaled * scale[:, None, None], 0.0, None)

    @torch.inference_mode()
    def members_scaled(self, history: np.ndarray, calendar: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Each member's quantiles [N, H, Q] in scaled units (in ``contract.members`` order) and the scale [N]."""
        x, scale = encode(history, calendar)
        members = []
        if self.net is not None:
            members.append(self.net(torch.from_numpy(x)).numpy())
        if self.boosters is not None:
            members.append(self.boosters.predict_scaled(history, calendar))
        return members, scale
