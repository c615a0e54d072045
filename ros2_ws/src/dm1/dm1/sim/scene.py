"""MJCF additions to franky-sim's FR3 scene: table, free 5 cm cube, cameras and offscreen-render settings.

Call `build_scene(cfg)` to get a `MujocoSimulator` that is initialised, has the robot added and the Lift scene
appended to its element tree, but is not compiled yet (`SimulationServer.init()` compiles it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from dm1.sim.config import TwinConfig

if TYPE_CHECKING:
    from franky_sim.mujoco_simulator import FrankaMujocoRobot, MujocoSimulator

CUBE_BODY = "cube"
CUBE_JOINT = "cube_joint"
TABLE_GEOM = "table"
#: franky-sim's robot prefix for the first robot.
ROBOT_PREFIX = "robot0_"


def _fmt(values: tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def camera_element_name(name: str) -> str:
    """MJCF name of the camera called `name` in dm1 (kept distinct from robot names)."""
    return f"dm1_cam_{name}"


def _find_body(root: ET.Element, name: str) -> ET.Element | None:
    for body in root.iter("body"):
        if body.get("name") == name:
            return body
    return None


def add_lift_scene(sim: MujocoSimulator, cfg: TwinConfig) -> None:
    """Append the table, the cube, the cameras and render settings to an initialised, uncompiled simulator."""
    scene, world = sim.scene, sim.worldbody
    table = cfg.table
    top = table.top_z

    # Rendering: no MSAA by default (5x faster on software EGL), frames up to 1920 px.
    visual = scene.find("visual")
    if visual is None:
        visual = ET.SubElement(scene, "visual")
    quality = visual.find("quality")
    if quality is None:
        quality = ET.SubElement(visual, "quality")
    quality.set("offsamples", "4" if cfg.multisample else "0")
    if not cfg.shadows:
        quality.set("shadowsize", "1024")
    glob = visual.find("global")
    if glob is None:
        glob = ET.SubElement(visual, "global")
    width = max([c.width for c in cfg.cameras.values()] + [640])
    height = max([c.height for c in cfg.cameras.values()] + [480])
    glob.set("offwidth", str(width))
    glob.set("offheight", str(height))

    # The floor goes below the table; the robot base stands on the table top.
    for geom in world.iter("geom"):
        if geom.get("name") == "ground":
            geom.set("pos", _fmt((0.0, 0.0, top - table.floor_depth)))

    asset = scene.find("asset")
    if asset is None:
        asset = ET.SubElement(scene, "asset")
    ET.SubElement(asset, "material", name="dm1_table", rgba="0.55 0.42 0.3 1", specular="0.1")
    ET.SubElement(asset, "material", name="dm1_cube", rgba="0.85 0.12 0.1 1", specular="0.3")

    cx, cy = table.center_xy
    ET.SubElement(
        world,
        "geom",
        name=TABLE_GEOM,
        type="box",
        pos=_fmt((cx, cy, top - 0.5 * table.thickness)),
        size=_fmt((0.5 * table.size_xy[0], 0.5 * table.size_xy[1], 0.5 * table.thickness)),
        material="dm1_table",
        friction="1 0.005 0.0001",
    )
    leg_h = table.floor_depth - table.thickness
    (x0, x1), (y0, y1) = table.xy_bounds()
    for i, (lx, ly) in enumerate(
        ((x0 + 0.05, y0 + 0.05), (x0 + 0.05, y1 - 0.05), (x1 - 0.05, y0 + 0.05), (x1 - 0.05, y1 - 0.05))
    ):
        ET.SubElement(
            world,
            "geom",
            name=f"table_leg{i}",
            type="box",
            material="dm1_table",
            contype="0",
            conaffinity="0",
            pos=_fmt((lx, ly, top - table.thickness - 0.5 * leg_h)),
            size=_fmt((0.025, 0.025, 0.5 * leg_h)),
        )

    half = 0.5 * cfg.cube_size
    x_mid = 0.5 * sum(cfg.cube_region[0])
    y_mid = 0.5 * sum(cfg.cube_region[1])
    cube = ET.SubElement(world, "body", name=CUBE_BODY, pos=_fmt((x_mid, y_mid, cfg.cube_rest_z)))
    ET.SubElement(cube, "freejoint", name=CUBE_JOINT)
    ET.SubElement(
        cube,
        "geom",
        name="cube_geom",
        type="box",
        size=_fmt((half, half, half)),
        mass=f"{cfg.cube_mass:.6g}",
        material="dm1_cube",
        friction="1.5 0.01 0.0001",
        condim="4",
        solref="0.01 1",
    )

    for name, spec in cfg.cameras.items():
        pose = spec.resolved()
        parent_name = str(pose["parent"])
        parent = world if parent_name == "world" else _find_body(world, parent_name)
        if parent is None:
            raise ValueError(
                f"TwinConfig: cameras.{name}.parent: expected 'world' or a body of the franky-sim scene, "
                f"found {parent_name!r}"
            )
        ET.SubElement(
            parent,
            "camera",
            name=camera_element_name(name),
            mode="fixed",
            pos=_fmt(pose["pos"]),
            xyaxes=_fmt(pose["xyaxes"]),
            fovy=f"{float(pose['fovy']):.6g}",
        )


def build_scene(cfg: TwinConfig) -> tuple[MujocoSimulator, FrankaMujocoRobot]:
    """Create franky-sim's simulator with one FR3 and the dm1 Lift scene (not compiled yet)."""
    from franky_sim.mujoco_simulator import MujocoSimulator

    sim = MujocoSimulator(enable_visualization=False)
    sim.init()
    arm = sim.add_robot()
    add_lift_scene(sim, cfg)
    return sim, arm
