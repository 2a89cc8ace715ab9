"""The build's one step beyond pyproject.toml: hosts.example.toml, kept once at the top of the
checkout, ships inside the package (deployer/config/), where an installed deployer finds it
(deployer.config.example). An editable install reads the checkout's copy instead; the sdist
carries the file (MANIFEST.in)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

EXAMPLE = "hosts.example.toml"
SHIPPED = os.path.join("deployer", "config", EXAMPLE)


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            self.copy_file(EXAMPLE, os.path.join(self.build_lib, SHIPPED))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        extra = [] if self.editable_mode else [os.path.join(self.build_lib, SHIPPED)]
        return [*super().get_outputs(include_bytecode), *extra]


setup(cmdclass={"build_py": BuildPy})
