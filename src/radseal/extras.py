"""Optional dependencies: the core install has no PyTorch, SciPy, scikit-learn or matplotlib.

The core (``pip install radseal``) encodes, decodes, seals, sends and serves
with the default codec and runs the pneumonia classifier in numpy. Anything
else lives in an extra; a module that needs one asks for it here, so that a
missing package is one clear line instead of a traceback:

    torch = require("torch", "neural", "the neural hyperprior codec (rsc1)")
    -> radseal: error: the neural hyperprior codec (rsc1) needs PyTorch: pip install 'radseal[neural]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from radseal.errors import RadsealError

#: Import name -> the name a user knows the package by.
PACKAGES = {
    "torch": "PyTorch",
    "scipy": "SciPy",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "imagecodecs": "imagecodecs",
    "psycopg": "psycopg",
    "psycopg_pool": "psycopg_pool",
}

#: Extra -> what it brings (README, error messages).
EXTRAS = {
    "neural": "PyTorch: encode and decode streams of the neural hyperprior codec (rsc1)",
    "train": "PyTorch, scikit-learn, SciPy: train-codec, export-codec, fit-codec, train-classifier",
    "paper": "PyTorch, scikit-learn, matplotlib: radseal paper, demo --insecure-paper-cipher",
    "evaluate": "PyTorch, SciPy, scikit-learn, matplotlib, imagecodecs: radseal evaluate and its baselines",
    "fleet": "psycopg, psycopg_pool: radseal serve --index postgresql://... (several receivers, one index)",
    "test": "all of the above plus pytest and hypothesis",
}


#: Extra -> the import names of what it brings (pyproject.toml's optional-dependencies; tested).
EXTRA_PACKAGES = {
    "neural": ("torch",),
    "train": ("torch", "sklearn", "scipy"),
    "paper": ("torch", "sklearn", "matplotlib"),
    "evaluate": ("torch", "scipy", "sklearn", "matplotlib", "imagecodecs"),
    "fleet": ("psycopg", "psycopg_pool"),
}

#: Command -> the extra it needs beyond the core install; commands not named run on the core.
COMMAND_EXTRAS = {
    "train-codec": "train",
    "export-codec": "train",
    "fit-codec": "train",
    "train-classifier": "train",
    "paper": "paper",
    "evaluate": "evaluate",
}


def extra_for(module: str, command: str | None = None) -> str | None:
    """The extra to install for ``module``: the command's own if it brings it, else the smallest
    that does; None when no extra brings it (not an optional dependency)."""
    top = module.split(".")[0]
    own = COMMAND_EXTRAS.get(command or "")
    if own and top in EXTRA_PACKAGES[own]:
        return own
    fits = [e for e, mods in EXTRA_PACKAGES.items() if top in mods]
    return min(fits, key=lambda e: len(EXTRA_PACKAGES[e])) if fits else None


class MissingExtraError(RadsealError):
    """A feature needs a package that only an extra (``radseal[...]``) installs."""


def install_hint(extra: str) -> str:
    return f"pip install 'radseal[{extra}]'"


def missing_message(module: str, extra: str, purpose: str) -> str:
    name = PACKAGES.get(module.split(".")[0], module)
    return f"{purpose} needs {name}: {install_hint(extra)}"


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise  # the package is there but broken inside: not a missing extra
        raise MissingExtraError(missing_message(module, extra, purpose)) from None


def available(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
