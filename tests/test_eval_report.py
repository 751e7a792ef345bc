"""What `lapa eval` reports about episodes in which the arm never moved (pure functions, no ROS)."""
import io

from lapa_ros.evaluation.evaluate import acting_problem, report_not_moved, summarize


def _row(episode, commands, motion, forwarded, success=False):
    return {"episode": episode, "task": "reach", "success": success, "steps": 10, "commands": commands,
            "motion_commands": motion, "forwarded_motion": forwarded}


def test_acting_problem_tells_no_policy_from_holds_from_a_refusing_controller():
    assert "acted on no frame" in acting_problem(_row(1, 0, 0, 0))
    assert "were holds" in acting_problem(_row(1, 12, 0, 0))
    assert "passed on none of the 12" in acting_problem(_row(1, 12, 12, 0))
    assert acting_problem(_row(1, 12, 12, 3)) is None
    assert acting_problem(_row(1, 0, 0, 3)) is None   # the arm moved: commands the counter missed do not matter
    # Not watched (robot mode has no forwarded count; old rows have none): no verdict on what was not seen.
    assert acting_problem({"episode": 1, "commands": 5, "motion_commands": 5}) is None
    assert acting_problem({"episode": 1}) is None


def test_an_evaluation_where_the_arm_never_moved_fails_with_the_reason():
    rows = [_row(1, 0, 0, 0), _row(2, 0, 0, 0)]
    summary = {**summarize(rows, "x"), "policy_diagnostics": {"count.image_refused": "40", "latency_ms_p50": "3"},
               "controller_diagnostics": {"state": "ARMED", "count.stale": "0"}}
    assert summary["episodes_arm_not_moved"] == [1, 2]
    err = io.StringIO()
    assert report_not_moved(summary, out=err) == 1
    text = err.getvalue()
    assert text.startswith("error: the arm did not move in any of the 2 episodes")
    assert "count.image_refused=40" in text and "latency_ms_p50" not in text and "state=ARMED" in text


def test_some_episodes_without_motion_are_listed_but_the_run_stands():
    rows = [_row(1, 30, 30, 30, success=True), _row(2, 0, 0, 0)]
    summary = summarize(rows, "x")
    err = io.StringIO()
    assert report_not_moved(summary, out=err) == 0
    assert "episodes [2]" in err.getvalue()
    assert report_not_moved(summarize([_row(1, 30, 30, 30)], "x"), out=io.StringIO()) == 0
