"""What CityScale knows about each city: time zone, public-holiday calendar, lockdown region."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    name: str
    timezone: str
    holiday_country: str
    holiday_subdiv: str
    lockdown_region: str


CITIES: dict[str, City] = {
    "melbourne": City("melbourne", "Australia/Melbourne", "AU", "VIC", "AU-VIC/Melbourne"),
    "auckland": City("auckland", "Pacific/Auckland", "NZ", "AUK", "NZ-AUK/Auckland"),
}


def get_city(name: str) -> City:
    try:
        return CITIES[name]
    except KeyError:
        raise ValueError(f"unknown city {name!r}; known: {sorted(CITIES)}") from None
