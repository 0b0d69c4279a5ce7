"""pip install for roma_ros's Python package (virtual environments without a ROS workspace).

In a ROS 2 workspace, colcon builds the package with CMakeLists.txt instead; both read the
executables from resource/executables.
"""
from pathlib import Path

from setuptools import find_packages, setup


def console_scripts():
    lines = (Path(__file__).parent / "resource" / "executables").read_text().splitlines()
    return [line.replace(" ", "") for line in lines if "=" in line and not line.startswith("#")]


setup(
    name="roma_ros",
    version="0.1.0",
    description="ROMA real-time omni-multimodal perception for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["roma_ros", "roma_ros.*"]),
    package_data={"roma_ros": ["py.typed", "models/roma_tiny/*", "data/sample/*", "data/sample/bag/*",
                               "training/assets/*", "training/MODEL_CARD.template.md"]},
    entry_points={"console_scripts": console_scripts()},
)
