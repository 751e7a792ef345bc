"""Turn a graph of lapa_ros.bringup.graph into a LaunchDescription (imports launch/launch_ros lazily).

Every launch file in launch/ is two lines around `launch_description_for(<graph>)`: the launch
arguments come from the graph's argument table and the nodes from the graph function, so
`ros2 launch` and `lapa bringup` always start the same thing.
"""
from __future__ import annotations

import os

from lapa_ros.bringup.graph import GRAPHS, build_graph


def _typed(spec) -> dict:
    """The node's parameters for launch_ros, text parameters marked as text: launch_ros reads a value as YAML,
    so a RealSense serial "017322071306" would reach the node as a number (and lose its leading zero)."""
    import importlib

    from launch_ros.parameter_descriptions import ParameterValue

    table = {p.name: p for p in getattr(importlib.import_module(spec.module), "PARAMS", ())}
    return {name: ParameterValue(str(value), value_type=str)
            if name in table and isinstance(table[name].default, str) and isinstance(value, str) else value
            for name, value in spec.parameters.items()}


def launch_description_for(graph: str):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    _, arguments = GRAPHS[graph]

    def nodes(context, *args, **kwargs):
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in arguments}
        return [Node(package="lapa_ros", executable=spec.executable, name=spec.name, namespace=spec.namespace or None,
                     parameters=[str(p) for p in spec.config_paths()] + ([_typed(spec)] if spec.parameters else []),
                     remappings=list(spec.remappings), output="screen", emulate_tty=True,
                     respawn=spec.respawn, respawn_delay=spec.respawn_delay,
                     # a node that is not respawned brings the graph down, as `lapa bringup` does
                     **({} if spec.respawn else {"on_exit": [Shutdown(reason=f"{spec.name} exited")]}),
                     **({"prefix": " ".join(spec.prefix)} if spec.prefix else {}))
                for spec in build_graph(graph, values)]

    from lapa_ros.bringup.dds import dds_defaults

    # The nodes started here get config/fastdds.xml unless the user set their own DDS settings.
    dds = [SetEnvironmentVariable(k, v) for k, v in dds_defaults({}).items() if k not in os.environ]
    return LaunchDescription([DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                              for a in arguments] + dds + [OpaqueFunction(function=nodes)])
