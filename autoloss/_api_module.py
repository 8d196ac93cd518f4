"""Modules that are also the public function of the same name.

``autoloss.fingerprint``, ``autoloss.search``, ``autoloss.export`` and ``autoloss.report`` are the API's functions
and, at the same time, submodules. Python binds a submodule to its package's attribute when it is first imported,
so a plain function of that name would be replaced, depending on what happened to be imported first. Instead each
of those modules marks itself callable: ``autoloss.fingerprint(ds)`` calls ``autoloss.api.fingerprint(ds)`` and
``from autoloss.fingerprint import compute_fingerprint`` keeps working.
"""
from __future__ import annotations

import sys
import types


class ApiModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from autoloss import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    sys.modules[module_name].__class__ = ApiModule
