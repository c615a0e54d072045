"""ament_python package dm1_sim (also pip-installable: pip install -e ros2_ws/src/dm1_sim)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "dm1_sim"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
        ("share/" + package_name + "/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="dm1 digital twin node: franky-sim FR3 Lift scene, rendered cameras, /clock, reset.",
    license="Apache-2.0",
    entry_points={"console_scripts": ["twin_node = dm1_sim.twin_node:main"]},
)
