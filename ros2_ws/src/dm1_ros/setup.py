"""ament_python package dm1_ros (also pip-installable: pip install -e ros2_ws/src/dm1_ros)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "dm1_ros"

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
    description="dm1 ROS 2 nodes: policy (lifecycle), franky controller, RealSense, teleop recorder.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "policy_node = dm1_ros.policy_node:main",
            "controller_node = dm1_ros.controller_node:main",
            "realsense_node = dm1_ros.realsense_node:main",
            "teleop_node = dm1_ros.teleop_node:main",
            "foxglove_node = dm1_ros.foxglove_node:main",
        ]
    },
)
