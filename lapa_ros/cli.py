"""`lapa`: one command line for the whole workflow.

    lapa demo                         the whole stack on the simulated arm (the README's first command)
    lapa data generate ...            expert episodes from simulation
    lapa data info DIR                what a dataset holds
    lapa bench sim                    simulator step/render time and generation throughput (JSON)

Each subcommand lives in the module that owns the work. The commands are rows of tables (see
lapa_models.commands): the model layer's and the simulator's (lapa_sim.commands.SIM_COMMANDS) and the
ROS layer's below; a module is imported only when its command runs, so `lapa --help` stays fast.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from lapa_models.commands import Command, run_program
from lapa_sim.commands import SIM_COMMANDS


def _demo():
    from lapa_ros.evaluation import demo
    return demo.add_arguments, demo.main


def _bringup():
    from lapa_ros.bringup import supervisor
    return supervisor.add_arguments, supervisor.main


def _instruct():
    from lapa_ros.bringup import instruct
    return instruct.add_arguments, instruct.main


def _record_sim():
    from lapa_ros.recording import record_session
    return record_session.add_arguments, record_session.main


def _bags_convert():
    from lapa_ros.recording import bag_convert
    return bag_convert.add_arguments, bag_convert.main


def _bags_recover():
    from lapa_ros.recording import bag_tools
    return bag_tools.add_recover_arguments, bag_tools.recover_main


def _bags_info():
    from lapa_ros.recording import bag_tools
    return bag_tools.add_info_arguments, bag_tools.info_main


def _finetune_bags():
    from lapa_ros.recording import finetune_bags
    return finetune_bags.add_arguments, finetune_bags.main


def _demo_policy_train():
    from lapa_ros.evaluation import demo_policy
    return demo_policy.add_train_arguments, demo_policy.train_main


def _demo_policy_export():
    from lapa_ros.evaluation import demo_policy
    return demo_policy.add_export_arguments, demo_policy.export_main


def _eval():
    from lapa_ros.evaluation import evaluate
    return evaluate.add_arguments, evaluate.main


def _eval_compare():
    from lapa_ros.evaluation import evaluate
    return evaluate.add_compare_arguments, evaluate.compare_main


def _bench_pipeline():
    from lapa_ros.evaluation import bench
    return bench.add_pipeline_arguments, bench.pipeline_main


def _bench_recorder():
    from lapa_ros.evaluation import bench
    return bench.add_recorder_arguments, bench.recorder_main


def _bench_soak():
    from lapa_ros.evaluation import bench
    return bench.add_soak_arguments, bench.soak_main


ROS_COMMANDS: List[Command] = [
    Command(("demo",), "run the stack on the simulated arm: episodes, success, rollout video", _demo),
    Command(("bringup",), "start a node graph (what `ros2 launch` starts) without ros2 launch", _bringup),
    Command(("instruct",), "send the robot an instruction (std_msgs/String on `instruction`)", _instruct),
    Command(("record", "sim"), "record demonstrations in simulation through ROS (expert operator)", _record_sim),
    Command(("bags", "convert"), "convert episode bags to training episodes (aligned on stamps)", _bags_convert),
    Command(("bags", "recover"), "complete bags left by a recorder that was killed", _bags_recover),
    Command(("bags", "info"), "topics, counts, rates and episode facts of bags", _bags_info),
    Command(("finetune-bags",), "bags + pretrained checkpoint -> finetuned, exported policy", _finetune_bags),
    Command(("demo-policy", "train"), "train the demo policy with the whole LAPA pipeline", _demo_policy_train),
    Command(("demo-policy", "export"), "export the shipped demo policy to ONNX", _demo_policy_export),
    Command(("eval",), "evaluate a policy: N episodes in simulation or on a robot, videos, summary", _eval),
    Command(("eval-compare",), "compare evaluation runs side by side (table + plot)", _eval_compare),
    Command(("bench", "pipeline"), "benchmark: camera stamp -> command latency, control rate", _bench_pipeline),
    Command(("bench", "recorder"), "benchmark: recorder drops at 2x640x480@30 Hz, conversion", _bench_recorder),
    Command(("bench", "soak"), "benchmark: every node's memory over a long run (RSS, JSON)", _bench_soak),
]

# `lapa --help` lists the commands in workflow order.
_ORDER = ("demo", "bringup", "instruct", "data", "laq", "policy", "record", "bags", "finetune-bags", "demo-policy",
          "benchmark", "eval", "eval-compare", "bench")
COMMANDS: List[Command] = sorted(SIM_COMMANDS + ROS_COMMANDS,
                                 key=lambda c: _ORDER.index(c.words[0]) if c.words[0] in _ORDER else len(_ORDER))


def main(argv: Optional[List[str]] = None) -> int:
    return run_program(COMMANDS, "lapa", __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
