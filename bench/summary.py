"""The figure every benchmark reports: median with min, max and the number of measurements."""
from __future__ import annotations

import statistics


def stats(values, digits: int = 3) -> dict | None:
    values = list(values)
    if not values:
        return None
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values)}
