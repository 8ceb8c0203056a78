"""The single resume policy of a run folder: finished, resume, fresh, or stale.

A run folder holds the resolved config it was started with. Called again on the same folder, a run

- is **finished** when ``summary.json`` exists (nothing to do);
- **resumes** from ``checkpoints/last.pt`` when it exists;
- starts **fresh** otherwise;

unless it is **stale**: its stored config differs from the new one in a key that changes the numbers,
or its teacher checkpoint or its prepared cohort is newer than the run (rebuilt upstream since the run
began). A stale folder is refused with the reasons (``if_stale="error"``, the CLI's default) or
discarded and trained again (``if_stale="restart"``, what the workflow does); ``restart=True``
discards any folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ofg.config import RunConfig
from ofg.layout import RunFolder, cohort_manifest

log = logging.getLogger("ofg.train")

#: config keys that may change between a run and its resumption (they do not change the weights; the
#: guidance gap only adds history columns, :mod:`ofg.gap`)
RUNTIME_KEYS = ("num_workers", "guidance_gap")
IF_STALE = ("error", "restart")


def _lookup(config: RunConfig, dotted: str) -> Any:
    value: Any = config.to_dict()
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def stale_reasons(folder: RunFolder, config: RunConfig) -> list[str]:
    """Why the run in ``folder`` cannot be continued with the resolved ``config``; [] when it can."""
    if not folder.config.is_file():
        return []
    stored = RunConfig.load(folder.config)
    diff = differing_keys(stored, config, ignore=RUNTIME_KEYS)
    reasons = ["different config (differing keys: "
               + "; ".join(f"{k}: {_lookup(stored, k)!r} -> {_lookup(config, k)!r}" for k in diff) + ")"] if diff else []
    started = folder.config.stat().st_mtime
    for what, path in (("teacher", config.teacher), ("cohort", cohort_manifest(config.dataset.root))):
        if path and Path(path).is_file() and Path(path).stat().st_mtime > started:
            reasons.append(f"{what} {path} is newer than the run")
    return reasons


def _discard(folder: RunFolder) -> None:
    folders, files = folder.restartable()
    for path in folders:
        shutil.rmtree(path, ignore_errors=True)
    for path in files:
        path.unlink(missing_ok=True)


def prepare_run_folder(folder: RunFolder, config: RunConfig, *, restart: bool = False,
                       if_stale: str = "error") -> str:
    """Apply the policy to ``folder`` for the resolved ``config``: "finished", "resume" or "fresh".

    A stale folder raises a ValueError naming the reasons (``if_stale="error"``) or is discarded
    (``"restart"``). A fresh folder gets ``config`` written into it.
    """
    if if_stale not in IF_STALE:
        raise ValueError(f"if_stale must be one of {IF_STALE}, got {if_stale!r}")
    reasons = [] if restart else stale_reasons(folder, config)
    if reasons and if_stale == "error":
        raise ValueError(f"{folder.path} holds a run that cannot be continued: {'; '.join(reasons)}. Use another "
                         "output folder, or restart=True / --restart to discard it.")
    if reasons:
        log.info("%s: starting over (%s)", folder.path, "; ".join(reasons))
    if restart or reasons:
        _discard(folder)
    elif folder.config.is_file():
        if folder.summary.is_file():
            return "finished"
        return "resume" if folder.last.is_file() else "fresh"
    folder.path.mkdir(parents=True, exist_ok=True)
    config.save(folder.config)
    return "fresh"


def differing_keys(a: RunConfig, b: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs (nested mappings compared leaf by leaf)."""
    return [k for k in _diff(a.to_dict(), b.to_dict(), "") if k not in ignore]


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b), key=str)
        out: list[str] = []
        for key in keys:
            out += _diff(a.get(key, _MISSING), b.get(key, _MISSING), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


_MISSING = object()
