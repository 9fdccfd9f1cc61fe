"""Rebuild the bundled sample (cityscale/data/melbourne_sample.parquet) from the full exports.

Provenance of the sample: City of Melbourne Pedestrian Counting System, CC BY 4.0, read from
``../shared/data/melbourne_pcs`` with the project's own wide-CSV reader (no cleaning, so the
artefacts stay in for the quality step to find). Sensors: eight with long, clean histories
(2019-01 to 2022-10, spanning the COVID lockdowns) and four installed in 2021-2022.

    python scripts/make_sample.py ../shared/data/melbourne_pcs
"""

from __future__ import annotations

import sys
from pathlib import Path

from cityscale.config import PACKAGE_DATA
from cityscale.ingestion.run import load_snapshot

LONG_HISTORY = ["Bou283_T", "FliS_T", "Col700_T", "BouHbr_T", "WatCit_T", "Swa295_T", "Lyg161_T", "Eli483_T"]
SHORT_HISTORY = ["KenMac_T", "FliSS_T", "ElFi_T", "488Mac_T"]
START = "2019-01-01"


def main(source: str) -> None:
    df = load_snapshot(source)
    df = df[df["sensor_id"].isin(LONG_HISTORY + SHORT_HISTORY) & (df["timestamp_local"] >= START)]
    df = df.astype({"count": "int32"}).sort_values(["sensor_id", "timestamp_local"], ignore_index=True)
    out = Path(PACKAGE_DATA) / "melbourne_sample.parquet"
    df.to_parquet(out, index=False, compression="zstd")
    print(f"{out}: {len(df):,} rows, {df['sensor_id'].nunique()} sensors, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/melbourne_pcs")
