"""Build hook (all other metadata is in pyproject.toml): the wheel carries the top-level ``fingerprints/`` and
``search_spaces/`` as package data (``autoloss/data/``), copied at build time so the repository keeps one
user-editable source of each (see autoloss/resources.py for which copy is read when)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_FOLDERS = ("fingerprints", "search_spaces")


class build_py_with_data(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for folder in DATA_FOLDERS:
            target = Path(self.build_lib) / "autoloss" / "data" / folder
            shutil.copytree(root / folder, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.tmp"))


setup(cmdclass={"build_py": build_py_with_data})
