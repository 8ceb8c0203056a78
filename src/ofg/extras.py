"""Optional dependencies and the extra that installs them, with an error that says which.

``pip install ofg`` is the library (networks, losses, OFG, data, train and evaluate); the
``[workflow]`` extra adds the report's and the notebooks' libraries and Snakemake, ``[baselines]``
ANTsPy for the SyN rows, ``[slurm]`` Snakemake's SLURM executor, ``[dev]`` the tests and all of them.
Standard library only.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: extra -> the import names its packages provide that the code checks for
EXTRAS: dict[str, tuple[str, ...]] = {
    "workflow": ("matplotlib", "tabulate", "papermill", "snakemake"),
    "baselines": ("ants",),
    "slurm": ("snakemake_executor_plugin_slurm",),
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def _message(module: str, extra: str, purpose: str) -> str:
    return (f"{purpose} needs the Python package that provides '{module}', which is not installed: "
            f"pip install 'ofg[{extra}]' (from a checkout: pip install -c constraints.txt -e '.[{extra}]')")


def require(extra: str, purpose: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtraError` unless ``modules`` (default: every module of ``extra``, a key
    of :data:`EXTRAS`) are importable; ``purpose`` says what needs them, e.g. "the report"."""
    for module in modules if modules is not None else EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(_message(module, extra, purpose), name=module)


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` of ``extra``; a missing one raises :class:`MissingExtraError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0]:
            raise
        raise MissingExtraError(_message(module, extra, purpose), name=module) from exc
