"""Python packages a profile needs beyond the base install (its ``requires:`` list): whether they import
here, and the command that installs them, so a missing one stops the profile before any weights load."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

from sp_assets.backends.common.versions import NOT_INSTALLED, package_version

GPU_SETUP = "make setup-gpu (PyPI's CUDA torch 2.13 with its torchvision; README, 'On a GPU machine')"


class MissingPackageError(ImportError):
    """A profile needs a package that is not installed here, or that is installed but fails to import."""


def import_problem(module: str) -> str | None:
    """None when ``module`` imports; else what went wrong.

    A real import, not just a look-up: a torchvision built for another torch is found but fails to import
    ("operator torchvision::nms does not exist"), and the model would fail the same way later.
    """
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import means the package cannot be used
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return None


def install_command(package: str) -> str:
    """The command that installs ``package`` (an import name: its top-level module is what pip is
    asked for) into the running environment."""
    pip = f"{sys.executable} -m pip install"
    package = package.split(".")[0]
    if package != "torchvision":
        return f"{pip} {package}"
    torch = package_version("torch")
    if torch == NOT_INSTALLED:
        return f"{pip} torch torchvision"
    local = torch.partition("+")[2]  # 'cpu' or 'cu128' for PyTorch's own wheels, '' for PyPI's
    # Naming the installed torch makes pip pick the one torchvision release built for it (torchvision
    # pins torch exactly) instead of upgrading torch.
    index = f" --index-url https://download.pytorch.org/whl/{local}" if local else ""
    return f'{pip} "torch=={torch}" torchvision{index}'


def missing_message(who: str, package: str, problem: str, why: str = "") -> str:
    """The error text: who needs the package, what is wrong with it here, and how to install it."""
    if problem.startswith("ModuleNotFoundError") and f"'{package}'" in problem:
        state = "is not installed here"
    else:
        state = f"is installed but does not import here ({problem})"
        if package == "torchvision":
            state += "; a torchvision built for another torch than the installed one fails like this"
    also = f"; in a new clone on a GPU machine: {GPU_SETUP}" if package == "torchvision" else ""
    return (f"{who} needs the Python package {package!r}{why}, which {state}. "
            f"Fix: {install_command(package)}{also}. Then run the step again.")


def check_packages(who: str, packages: Sequence[str], why: str = "") -> None:
    """Raise ``MissingPackageError`` naming ``who``, the first package that does not import, and the fix."""
    for package in packages:
        problem = import_problem(package)
        if problem is not None:
            raise MissingPackageError(missing_message(who, package, problem, why), name=package)
