"""The user's whole loop in simulation, through ROS: record -> convert -> finetune -> export -> evaluate."""
import argparse
import io
import json
import os

import pytest

from lapa_models.data import EpisodeDataset
from lapa_ros.recording import finetune_bags
from lapa_ros.evaluation.evaluate import evaluate_sim, report_not_moved
from lapa_ros.recording.record_session import record

pytestmark = pytest.mark.timeout(900)


def test_record_convert_finetune_export_evaluate(ros_env, tmp_path):
    env = {**os.environ, **ros_env}
    # 1. Demonstrations recorded as bags through ROS: the scripted expert operates the simulated arm
    #    through the arm controller; the recorder writes one MCAP bag per episode.
    recorded = record("reach,drawer-close", episodes_per_task=2, out=tmp_path / "bags", env=env, log=lambda *_: None)
    assert recorded["episodes"] == 4 and recorded["successes"] >= 3
    bags = sorted(p for p in (tmp_path / "bags").iterdir() if p.name.startswith("episode_"))
    assert len(bags) == 4

    # 2-4. One command: bags -> episodes -> finetuned tiny policy -> ONNX export with its model card.
    parser = argparse.ArgumentParser()
    finetune_bags.add_arguments(parser)
    args = parser.parse_args(["--bags", str(tmp_path / "bags"), "--init", "scratch", "--config", "tiny",
                              "--out", str(tmp_path / "run"), "--steps", "30", "--image-size", "64", "64",
                              "--precisions", "fp32", "--", "--batch-size", "16", "--no-progress",
                              "--eval-every", "1000", "--save-every", "0", "--threads", "2"])
    assert finetune_bags.main(args) == 0
    episodes = EpisodeDataset(tmp_path / "run" / "episodes")
    assert len(episodes) == recorded["successes"]
    assert episodes.info.action_names == ["vx", "vy", "vz", "gripper"]
    card = json.loads((tmp_path / "run" / "export" / "model_card.json").read_text())
    assert card["action"]["names"] == ["vx", "vy", "vz", "gripper"]

    # 5. The exported policy runs the simulated arm through the policy node and the arm controller.
    summary = evaluate_sim(str(tmp_path / "run" / "export"), "reach,drawer-close", episodes_per_task=1,
                           out=tmp_path / "eval", real_time=False, env=env, log=lambda *_: None)
    assert summary["episodes"] == 2
    rows = json.loads((tmp_path / "eval" / "episodes.json").read_text())
    assert len(rows) == 2 and all(r["steps"] > 0 for r in rows)
    # The policy's own commands moved the arm in every episode (none would be a setup failure, not a result).
    assert all(r["commands"] > 0 and r["forwarded_motion"] > 0 for r in rows), rows
    assert summary["episodes_arm_not_moved"] == []
    assert (tmp_path / "eval" / "summary.png").is_file() and list((tmp_path / "eval" / "videos").glob("*.mp4"))
    # The lockstep simulator steps anyway (it holds after lockstep_timeout), so a step count proves
    # nothing: the policy node's own diagnostics must show it ran inference and published commands.
    diag = summary["policy_diagnostics"]
    assert diag.get("providers_in_use") == "CPUExecutionProvider"
    # (latency is in simulated time here, which stands still during inference in lockstep: 0 is right.)
    assert float(diag["inference_rate_hz"]) > 0 and float(diag["command_rate_hz"]) > 0, diag
    assert float(diag["inference_ms_p50"]) > 0, diag

    # 6. The same policy on the simulated Franka (another arm: its joint_states lack the Sawyer's gripper joint
    #    the policy reads) never acts. That is a setup failure, not a 0% result: the run says so and fails.
    summary = evaluate_sim(str(tmp_path / "run" / "export"), "panda-reach", episodes_per_task=1,
                           out=tmp_path / "eval_panda", real_time=False, env=env, log=lambda *_: None)
    assert summary["episodes_arm_not_moved"] == [1]
    assert int(summary["policy_diagnostics"]["count.gripper_joint_missing"]) > 0
    err = io.StringIO()
    assert report_not_moved(summary, out=err) == 1
    assert "did not move in any of the 1 episodes" in err.getvalue() and "gripper_joint_missing" in err.getvalue()


def test_eval_refuses_bad_input_in_one_line_before_starting_any_node(lapa, tmp_path):
    """An unknown task, a folder that is not an export, a corrupt graph, zero episodes: one "error:" line,
    exit code 2, nothing written (before, the nodes started and the run failed later with a traceback)."""
    not_export = tmp_path / "not_export"
    not_export.mkdir()
    cases = [(["--policy", not_export, "--tasks", "reach"], "model card is missing"),
             (["--policy", not_export, "--tasks", "no-such-task"], "unknown task 'no-such-task'"),
             (["--policy", not_export, "--tasks", "reach", "--episodes-per-task", 0], "at least 1")]
    for i, (argv, message) in enumerate(cases):
        out = tmp_path / f"eval{i}"
        code, _, err = lapa("eval", *argv, "--out", out)
        assert code == 2 and message in err and err.startswith("error:"), err
        assert not out.exists()
