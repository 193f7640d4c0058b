"""What a run records about itself: metrics.json and the values behind it."""

import json
import math
from pathlib import Path
from typing import Any


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Plain floats from Lightning's callback metrics (tensors and numbers)."""
    out = {}
    for key, value in metrics.items():
        value = float(value.item() if hasattr(value, "item") else value)
        out[key] = value
    return dict(sorted(out.items()))


def write_metrics(path: Path, payload: dict[str, Any]) -> None:
    """metrics.json, written to a temporary file first so it is never half-written."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    payload = {k: ({mk: clean(mv) for mk, mv in v.items()} if isinstance(v, dict) else clean(v))
               for k, v in payload.items()}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
