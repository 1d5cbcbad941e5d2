"""Build hook: put ``notebooks/experiment.py`` into the wheel as ``pqlib/notebooks/experiment.py``.

``pqlib sweep`` and ``pqlib rerun`` execute that notebook. The repository keeps one copy, in
``notebooks/`` beside the other notebooks (the book and its Colab twin use it there); an
installed pqlib has no checkout, so the wheel carries a copy made here (see
``pqlib.sweep.NOTEBOOK``). Everything else about the package is declared in ``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithExperiment(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # an editable install reads notebooks/ of the checkout
            target = Path(self.build_lib, "pqlib", "notebooks")
            self.mkpath(str(target))
            self.copy_file("notebooks/experiment.py", str(target / "experiment.py"))


setup(cmdclass={"build_py": BuildPyWithExperiment})
