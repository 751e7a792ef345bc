"""Teleop: device mappings (pure) and the nodes over DDS (Joy topic, a real terminal via a pty)."""
import os
import pty
import subprocess
import sys
import time

import numpy as np
import pytest
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger

from lapa_ros.bringup.graph import NodeSpec
from lapa_ros.interfaces.messages import twist_to_arrays
from lapa_ros.interfaces.ros_common import COMMAND_QOS
from lapa_ros.teleop.mapping import (EV_ABS, EV_KEY, EV_REL, GAMEPAD, SPACEMOUSE, EvdevState, JoyMapper, KeyboardMapper,
                                     pack_events)


# ----------------------------------------------------------------------------- pure mappings
def test_gamepad_sticks_map_to_scaled_twist_with_a_deadzone():
    m = JoyMapper(GAMEPAD, max_linear=0.2, max_angular=0.5)
    lin, ang, grip, events = m.update([0.05, 1.0, 0, 0, -0.5, 0], [0] * 8)
    assert np.allclose(lin, [0.2, 0.0, -0.2 * (0.5 - 0.1) / 0.9]) and np.allclose(ang, 0) and grip == 0
    lin, _, grip, _ = m.update([0, 0, 0, 0, 0, 0], [1] + [0] * 7)
    assert np.allclose(lin, 0) and grip == 1.0  # A held closes the gripper
    assert m.update([np.nan] * 6, [0] * 8)[0].tolist() == [0, 0, 0]


def test_buttons_fire_events_once_per_press():
    m = JoyMapper(GAMEPAD, 0.1, 0.5)
    start = [0] * 8
    start[7] = 1
    assert m.update([0] * 6, start)[3] == ["start"]
    assert m.update([0] * 6, start)[3] == []  # still held: no new event
    estop = [0] * 8
    estop[4] = 1
    assert m.update([0] * 6, estop)[3] == ["estop"]


def test_spacemouse_button_toggles_gripper_and_alternates_start_and_save():
    m = JoyMapper(SPACEMOUSE, 0.1, 0.5)
    assert m.update([0] * 6, [1, 0])[2] == 1.0
    assert m.update([0] * 6, [0, 0])[2] == 1.0
    assert m.update([0] * 6, [1, 0])[2] == 0.0
    assert m.update([0] * 6, [0, 1])[3] == ["start"]
    m.update([0] * 6, [0, 0])
    assert m.update([0] * 6, [0, 1])[3] == ["save"]


def test_keyboard_motion_lasts_while_the_key_repeats_then_stops():
    k = KeyboardMapper(max_linear=0.05, hold=0.5)
    k.key("w", now=10.0)
    assert np.allclose(k.velocity(10.3), [0.05, 0, 0])
    k.key("w", now=10.4)  # autorepeat
    assert np.allclose(k.velocity(10.8), [0.05, 0, 0])
    assert np.allclose(k.velocity(10.95), 0)
    assert k.key(" ", now=11) == "estop" and k.key("1", now=11) == "start" and k.key("g", now=11) is None
    assert k.gripper == 1.0


def test_evdev_stream_is_parsed_into_axes_and_buttons():
    state = EvdevState(axis_codes=[0, 1], button_codes=[0x130], abs_ranges={0: (-32768, 32767), 1: (-32768, 32767)})
    data = pack_events([(EV_ABS, 0, 32767), (EV_ABS, 1, -32768), (EV_KEY, 0x130, 1)])
    used = state.feed(data + data[:10])  # a partial record stays for the next read
    assert used == len(data)
    assert np.allclose(state.axes, [1.0, -1.0], atol=1e-4) and state.buttons == [1]


def test_relative_axes_not_reported_lately_are_at_rest_and_absolute_ones_persist():
    """The kernel drops zero-valued relative events: a SpaceMouse puck back at rest, or an axis released while
    another stays pushed, is never reported as zero. Such an axis reads zero once it is not reported for a
    while; a gamepad stick (absolute) keeps its last value."""
    state = EvdevState(axis_codes=[0, 1, 2], button_codes=[])
    state.feed(pack_events([(EV_REL, 0, 350), (EV_REL, 1, 175), (EV_ABS, 2, 350)]), now=10.0)
    assert np.allclose(state.axes_at(10.05, relative_hold=0.1), [1.0, 0.5, 1.0])
    assert np.allclose(state.axes_at(10.2, relative_hold=0.1), [0.0, 0.0, 1.0])   # released: no event came
    state.feed(pack_events([(EV_REL, 1, -350)]), now=10.3)   # only y pushed again: the old x must not come back
    assert np.allclose(state.axes_at(10.35, relative_hold=0.1), [0.0, -1.0, 1.0])
    state.feed(pack_events([(EV_ABS, 0, 0)]), now=10.4)      # an axis reported as absolute is absolute again
    assert np.allclose(state.axes_at(99.0, relative_hold=0.1), [0.0, 0.0, 1.0])


# ----------------------------------------------------------------------------- nodes over DDS
def _teleop_spec(profile):
    return NodeSpec(name=f"{profile}_teleop", executable=f"{profile}_teleop_node",
                    module="lapa_ros.teleop.joy_teleop", config=(f"{profile}_teleop.yaml",))


@pytest.mark.timeout(120)
def test_gamepad_node_turns_joy_messages_into_commands_and_recorder_calls(ros, start_graph):
    twists, grippers, estops, starts = [], [], [], []
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd", twists.append, COMMAND_QOS)
    ros.node.create_subscription(Float64, "arm_controller/gripper_cmd", grippers.append, COMMAND_QOS)
    ros.node.create_subscription(Bool, "arm_controller/estop", estops.append, COMMAND_QOS)

    def on_start(request, response):
        starts.append(time.monotonic())
        response.success, response.message = True, "bags/episode_1"
        return response

    ros.node.create_service(Trigger, "recorder/start", on_start)
    joy = ros.node.create_publisher(Joy, "joy", COMMAND_QOS)
    graph = start_graph([NodeSpec(name="gamepad_teleop", executable="gamepad_teleop_node",
                                  module="lapa_ros.teleop.joy_teleop", config=("gamepad_teleop.yaml",))])
    ros.wait_for(lambda: graph.dead() or joy.get_subscription_count() > 0, 30, "teleop node")
    graph.check_alive()
    time.sleep(0.5)
    assert not twists, "no Joy input yet: nothing is commanded"
    buttons = [0] * 8
    buttons[0] = 1  # close gripper
    buttons[7] = 1  # start an episode
    for _ in range(10):
        joy.publish(Joy(axes=[0.0, -1.0, 0.0, 0.0, 0.0, 0.0], buttons=buttons))
        time.sleep(0.05)
    ros.wait_for(lambda: len(twists) > 3 and starts, 5, "commands and the recorder call")
    lin, _ = twist_to_arrays(twists[-1])
    assert np.allclose(lin, [-0.1, 0.0, 0.0]) and grippers[-1].data == 1.0 and len(starts) == 1  # stick back: -x
    buttons = [0] * 8
    buttons[4] = 1
    joy.publish(Joy(axes=[0.0] * 6, buttons=buttons))
    ros.wait_for(lambda: estops, 5, "e-stop")
    n = len(twists)
    time.sleep(1.0)  # Joy silent beyond joy_timeout: the node stops commanding
    assert len(twists) - n < 15


@pytest.mark.timeout(120)
def test_keyboard_node_reads_a_terminal(ros, ros_env, tmp_path):
    twists, estops = [], []
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd", twists.append, COMMAND_QOS)
    ros.node.create_subscription(Bool, "arm_controller/estop", estops.append, COMMAND_QOS)
    master, slave = pty.openpty()
    env = {**os.environ, **ros_env}
    proc = subprocess.Popen([sys.executable, "-m", "lapa_ros.teleop.keyboard", "--ros-args", "-p", "max_linear_speed:=0.05"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    try:
        ros.wait_for(lambda: len(twists) > 2 or proc.poll() is not None, 60, "keyboard node commands")
        assert proc.poll() is None
        assert np.allclose(twist_to_arrays(twists[-1])[0], 0), "no key: zero velocity"
        for _ in range(6):
            os.write(master, b"a")
            time.sleep(0.1)
        lin, _ = twist_to_arrays(twists[-1])
        assert np.allclose(lin, [0.0, 0.05, 0.0]), lin
        os.write(master, b" ")
        ros.wait_for(lambda: estops, 5, "e-stop from the space bar")
        time.sleep(0.2)
        assert np.allclose(twist_to_arrays(twists[-1])[0], 0), "e-stop also stops the keyboard's own motion"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.close(master)


def test_keyboard_node_without_a_terminal_exits_with_a_clear_error(ros_env):
    out = subprocess.run([sys.executable, "-m", "lapa_ros.teleop.keyboard"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, env={**os.environ, **ros_env}, timeout=60)
    assert out.returncode == 1 and "needs a terminal" in out.stderr + out.stdout


def _teleop_on_fifo(ros, start_graph, tmp_path, profile):
    """A teleop node reading a FIFO as its input device (standing in for /dev/input/eventN): (graph, the FIFO's
    write end, [(receive time, TwistStamped)] of its commands)."""
    fifo = tmp_path / "event0"
    os.mkfifo(fifo)
    twists = []
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd",
                                 lambda m: twists.append((time.monotonic(), m)), COMMAND_QOS)
    spec = _teleop_spec(profile)
    spec = NodeSpec(name=spec.name, executable=spec.executable, module=spec.module, config=spec.config,
                    parameters={"device": str(fifo)})
    graph = start_graph([spec])
    deadline = time.monotonic() + 30
    while True:   # a FIFO opens for writing once the node has opened it for reading
        try:
            return graph, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), twists
        except OSError:
            graph.check_alive()
            assert time.monotonic() < deadline, "the node never opened the device"
            time.sleep(0.1)


@pytest.mark.timeout(120)
def test_an_input_device_that_ends_stops_the_commands_and_nan_axes_do_not_move(ros, start_graph, tmp_path):
    """A device read directly (here a FIFO standing in for /dev/input/eventN) that ends must not leave its last
    deflection repeated: the node stops commanding and the controller's watchdog holds."""
    graph, writer, twists = _teleop_on_fifo(ros, start_graph, tmp_path, "gamepad")
    try:
        os.write(writer, pack_events([(EV_ABS, 1, 350)]))   # left stick pushed fully: +x
        ros.wait_for(lambda: twists or graph.dead(), 30, "commands from the device")
        graph.check_alive()
        assert np.allclose(twist_to_arrays(twists[-1][1])[0], [0.1, 0.0, 0.0])
    finally:
        os.close(writer)
    t_end = time.monotonic()
    time.sleep(2.0)
    late = [m for t, m in twists if t > t_end + 1.0]
    assert late == [], f"{len(late)} commands (last {twist_to_arrays(late[-1])[0]}) after the device ended"
    graph.check_alive()
    assert "closed: no more commands" in graph.log("gamepad_teleop")


@pytest.mark.timeout(120)
def test_nan_and_inf_axes_command_no_motion(ros, start_graph):
    twists = []
    ros.node.create_subscription(TwistStamped, "arm_controller/twist_cmd", twists.append, COMMAND_QOS)
    joy = ros.node.create_publisher(Joy, "joy", COMMAND_QOS)
    graph = start_graph([_teleop_spec("gamepad")])
    ros.wait_for(lambda: graph.dead() or joy.get_subscription_count() > 0, 30, "teleop node")
    for _ in range(10):
        joy.publish(Joy(axes=[float("inf"), float("nan"), 0.0, float("-inf"), float("nan"), 0.0], buttons=[0] * 8))
        time.sleep(0.05)
    ros.wait_for(lambda: len(twists) > 3 or graph.dead(), 10, "commands")
    graph.check_alive()
    for m in twists:
        lin, ang = twist_to_arrays(m)
        assert np.all(lin == 0) and np.all(ang == 0), (lin, ang)


@pytest.mark.timeout(120)
def test_a_spacemouse_read_directly_stops_soon_after_the_puck_is_released(ros, start_graph, tmp_path):
    """Released, a SpaceMouse sends nothing (zero relative motion is never reported): its last push must not
    keep moving the arm until the joy_timeout, only for relative_axis_hold (0.1 s)."""
    graph, writer, twists = _teleop_on_fifo(ros, start_graph, tmp_path, "spacemouse")
    deadline = time.monotonic() + 30
    try:
        while not any(np.any(twist_to_arrays(m)[0] != 0) for _, m in twists):   # pushing along x, as a puck reports
            graph.check_alive()
            assert time.monotonic() < deadline, "no motion command from the device"
            os.write(writer, pack_events([(EV_REL, 0, 350), (0, 0, 0)]))
            time.sleep(0.01)
        for _ in range(30):
            os.write(writer, pack_events([(EV_REL, 0, 350), (0, 0, 0)]))
            time.sleep(0.01)
        released = time.monotonic()
        time.sleep(1.0)   # the device stays open and silent, as a real one at rest
        moving = [t - released for t, m in twists if t > released and np.any(twist_to_arrays(m)[0] != 0)]
        assert moving and max(moving) < 0.3, moving   # (with the joy_timeout alone: until 0.5 s)
        graph.check_alive()
    finally:
        os.close(writer)
