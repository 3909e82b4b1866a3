"""The config's keys as a user types them: the closest existing key to a misspelt one, for Hydra's
errors (runner/__main__.py) and the preflight checks (runner/preflight.py) alike."""
from __future__ import annotations

import difflib
from collections.abc import Sequence


def did_you_mean(key: str, siblings: Sequence[str]) -> str:
    """' Did you mean model.learning_rate?' for a misspelt model.learning_rat, or ''."""
    parent, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, [str(k) for k in siblings if k != name], n=1, cutoff=0.7)
    return f" Did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
