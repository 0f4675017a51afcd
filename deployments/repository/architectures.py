"""Which torch module classes an artifact may name: an operator's allow list, checked first.

metadata.json names its architecture as `package.module:Class`. Importing a module runs its
code, so a path is imported only when `allowed_architectures` (in `serve_config.yaml`'s
application args) matches it: an exact path, or `package.module:*` for every class of one
module. The shipped modules (`deployments.nets:*`) are always allowed.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterable

from torch import nn

from deployments.errors import ArtifactError

SHIPPED = ("deployments.nets:*",)


def is_allowed(import_path: str, allowed: Iterable[str]) -> bool:
    module, _, _ = import_path.partition(":")
    for pattern in (*SHIPPED, *allowed):
        p_module, _, p_class = pattern.partition(":")
        # The module part matches exactly: `mypkg.*` must not admit `mypkg_evil`.
        if p_module == module and fnmatch.fnmatchcase(import_path.partition(":")[2], p_class):
            return True
    return False


def resolve(import_path: str, allowed: Iterable[str]) -> type[nn.Module]:
    allowed = tuple(allowed)
    if not is_allowed(import_path, allowed):
        raise ArtifactError(
            f"architecture {import_path!r} is not allowed: add it (or "
            f"'{import_path.partition(':')[0]}:*') to allowed_architectures in the application's "
            f"args in serve_config.yaml; allowed now: {[*SHIPPED, *allowed]}"
        )
    module_name, _, class_name = import_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ArtifactError(
            f"architecture {import_path!r}: cannot import {module_name!r} ({exc}); install the "
            "package that provides it into the service's environment"
        ) from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ArtifactError(f"architecture {import_path!r} is not a torch.nn.Module class")
    return cls


def build(import_path: str, kwargs: dict, allowed: Iterable[str]) -> nn.Module:
    cls = resolve(import_path, allowed)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ArtifactError(
            f"architecture {import_path} rejects its kwargs {kwargs}: {exc}"
        ) from exc
