"""The gradient-boosted member of the model: LightGBM quantile regressors over the MLP's own inputs.

Why a second member: on every validation period we tried, the MLP and a tree model over the same
window make different errors, and the average of their quantiles beats either one (see the README's
ablations). Both members read exactly the same inputs (the ``input_window`` hours before the start
and the calendar of the target hours), so the feature contract, the online path and the no-leak
guarantee do not change.

One row per (example, horizon step); values are divided by the example's scale like the MLP's, so
one global model fits busy and quiet sensors. Boosters are stored as LightGBM text files (no
pickle) beside ``model.pt``.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import tempfile
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np

from cityscale import storage
from cityscale.model.inputs import history_scale

logger = logging.getLogger(__name__)

BOOSTER_FILE = "booster_q{q:02.0f}.txt"  # e.g. booster_q50.txt for the 0.5 quantile
BOOSTER_GLOB = "booster_q*.txt"
MIN_WINDOW = 168  # the same hour one week before every target hour must be in the window


def booster_file(quantile: float) -> str:
    return BOOSTER_FILE.format(q=round(quantile * 100))


def _calendar_columns(calendar_features: list[str]) -> tuple[list[int], int, int, int, int]:
    index = {name: i for i, name in enumerate(calendar_features)}
    dows = [index[f"dow_{d}"] for d in range(7)]
    return dows, index["hour_sin"], index["hour_cos"], index["holiday"], index["lockdown"]


def features(history: np.ndarray, calendar: np.ndarray, calendar_features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[N * H, F]`` and the per-example scale ``[N]`` from history ``[N, L]`` and calendar ``[N, H, K]``.

    Per target hour: last day's and last week's same hour, the mean of that hour over the window's
    days, the last 6 hours, each day's mean, the step, hour, weekday, holiday and lockdown flags, and
    the log level. Missing hours stay NaN (LightGBM routes them by itself).
    """
    n, window = history.shape
    if window < MIN_WINDOW:
        raise ValueError(f"the LightGBM member needs input_window >= {MIN_WINDOW} hours, got {window}")
    horizon = calendar.shape[1]
    scale = history_scale(history)
    x = history / scale[:, None]
    steps = np.arange(horizon)
    days = x[:, window - (window // 24) * 24 :].reshape(n, window // 24, 24)
    observed = np.isfinite(days)
    filled = np.where(observed, days, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        hour_mean = filled.sum(axis=1) / observed.sum(axis=1)  # [N, 24], NaN where never observed
        day_mean = filled.sum(axis=2) / observed.sum(axis=2)  # [N, days]
    dows, hour_sin, hour_cos, holiday, lockdown = _calendar_columns(calendar_features)
    hour = np.round(np.arctan2(calendar[..., hour_sin], calendar[..., hour_cos]) / (2 * np.pi) * 24) % 24
    per_step = [
        x[:, window - 24 + steps % 24],
        x[:, window - 168 + steps % 168],
        hour_mean[:, steps % 24],
        np.broadcast_to(steps, (n, horizon)),
        hour,
        calendar[..., dows].argmax(-1),
        calendar[..., holiday],
        calendar[..., lockdown],
    ]
    per_example = np.concatenate([x[:, -6:], day_mean, np.log1p(scale)[:, None]], axis=1)
    rows = np.concatenate(
        [np.stack([c.reshape(-1) for c in per_step], axis=1), np.repeat(per_example, horizon, axis=0)], axis=1
    )
    return rows.astype(np.float32), scale


def train_boosters(
    history: np.ndarray,
    calendar: np.ndarray,
    target: np.ndarray,
    calendar_features: list[str],
    quantiles: list[float],
    out_dir: str | Path,
    *,
    rounds: int,
    num_leaves: int,
    learning_rate: float,
    max_examples: int,
    seed: int,
    num_threads: int = 0,
) -> None:
    """Fit one quantile booster per quantile on (at most ``max_examples``, sampled) examples; write them."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    pick = np.arange(len(history))
    if len(pick) > max_examples:
        pick = np.sort(rng.choice(pick, max_examples, replace=False))
    x, scale = features(history[pick], calendar[pick], calendar_features)
    y = (target[pick] / scale[:, None]).reshape(-1)
    keep = np.isfinite(y)
    data = lgb.Dataset(x[keep], y[keep], free_raw_data=False)
    for q in quantiles:
        params = {
            "objective": "quantile",
            "alpha": q,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "seed": seed,
            "deterministic": True,
            "num_threads": num_threads,
            "verbose": -1,
        }
        booster = lgb.train(params, data, num_boost_round=rounds)
        booster.save_model(str(Path(out_dir, booster_file(q))))


class BoostedQuantiles:
    """The stored boosters of a model artifact; predicts ``[N, H, Q]`` in scaled units."""

    def __init__(self, directory: str | Path, quantiles: list[float], calendar_features: list[str]):
        import lightgbm as lgb

        self.files = [Path(directory, booster_file(q)) for q in quantiles]
        self.boosters = [lgb.Booster(model_file=str(f)) for f in self.files]
        # One thread: serving runs many small requests, and threads per call cost more than they save.
        self._predictors: list[Callable[[np.ndarray], np.ndarray]] = [
            partial(b.predict, num_threads=1) for b in self.boosters
        ]
        self.compiled = False
        self.calendar_features = calendar_features

    def compile(self, cache_dir: str | Path) -> bool:
        """Swap LightGBM's tree walk for native code compiled from the same trees (lleaves, LLVM); True if done.

        Why: the trees dominate a forecast's cost and grow with its rows (24 per sensor): LightGBM walks 100
        trees at ~25 ns each per row, the compiled forest at ~8 ns, with answers equal to 1e-12 (checked here
        on a probe before the swap). Compiling takes ~1 s per booster (without inlining, which would cost ~7 s
        for another ~40 % speed), once per model: the object code is cached in ``cache_dir`` under the hash of
        the model text and the compiler's versions. Without lleaves, or if anything fails, LightGBM stays.
        """
        try:
            import lleaves
        except ImportError:
            logger.warning("lleaves is not installed: the boosters run in LightGBM")
            return False
        cache = Path(cache_dir)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            compiler = f"lleaves {version('lleaves')}, llvmlite {version('llvmlite')}, {platform.machine()}"
            compiled = [self._compile_one(lleaves.Model, compiler, f, cache) for f in self.files]
            probe = _probe_rows(self.boosters[0].num_feature())
            for booster, native in zip(self.boosters, compiled, strict=True):
                expected, got = booster.predict(probe, num_threads=1), native(probe)
                if not np.allclose(got, expected, rtol=1e-9, atol=1e-9):
                    raise ValueError(f"compiled trees differ from LightGBM by {np.abs(got - expected).max():.3g}")
        except Exception as exc:  # a compiler problem must never stop the model from serving
            logger.warning("boosters not compiled, LightGBM serves them: %s", exc)
            return False
        self._predictors, self.compiled = compiled, True
        return True

    @staticmethod
    def _compile_one(model_class, compiler: str, model_file: Path, cache: Path) -> Callable[[np.ndarray], np.ndarray]:
        """One booster compiled, or loaded from ``cache`` when its object code is there and intact.

        Loading object code runs it: a damaged file would crash the process, not raise. So each file is stored
        with the SHA-256 of its bytes beside it, checked before loading; a mismatch means compile afresh. Both are
        written atomically (``storage.write_bytes_atomic``): another server process never loads half a file.
        """
        key = hashlib.sha256(model_file.read_bytes() + compiler.encode()).hexdigest()[:32]
        target, digest_file = cache / f"{key}.o", cache / f"{key}.o.sha256"
        model = model_class(model_file=str(model_file))
        if target.exists() and digest_file.exists() and _sha256(target.read_bytes()) == digest_file.read_text():
            model.compile(cache=str(target), finline=False)
            return partial(model.predict, n_jobs=1)
        with tempfile.TemporaryDirectory(prefix="cityscale-trees-") as scratch:
            built = Path(scratch, "forest.o")
            model.compile(cache=str(built), finline=False)  # compiles, and writes the object code to ``built``
            code = built.read_bytes()
        storage.write_bytes_atomic(str(target), code)
        storage.write_bytes_atomic(str(digest_file), _sha256(code).encode())
        return partial(model.predict, n_jobs=1)

    def predict_scaled(self, history: np.ndarray, calendar: np.ndarray) -> np.ndarray:
        """Quantiles ``[N, H, Q]`` in scaled units, sorted: each booster is fit on its own, so raw ones may cross."""
        x, _ = features(history, calendar, self.calendar_features)
        n, horizon = calendar.shape[:2]
        out = [predict(x).reshape(n, horizon) for predict in self._predictors]
        return np.sort(np.stack(out, axis=-1), axis=-1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _probe_rows(n_features: int) -> np.ndarray:
    """Rows to compare two implementations of a forest on: spread values, zeros and missing ones."""
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(0.0, 2.0, (64, n_features)), rng.uniform(0.0, 30.0, (64, n_features))])
    rows[::5, ::3] = np.nan
    rows[1::7, 1::4] = 0.0
    return rows.astype(np.float32)
