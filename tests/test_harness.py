"""The test harness itself: an exception in a callback of the test node fails the test (it used to be
swallowed, so a broken callback surfaced as a timeout much later)."""
import time
import pytest
from std_msgs.msg import String
from lapa_ros.interfaces.ros_common import COMMAND_QOS

def test_callback_exception_fails_the_test(ros):
    def boom(msg):
        raise RuntimeError("boom in callback")
    ros.node.create_subscription(String, "probe", boom, COMMAND_QOS)
    pub = ros.node.create_publisher(String, "probe", COMMAND_QOS)
    time.sleep(0.5)
    pub.publish(String(data="x"))
    with pytest.raises(AssertionError, match="boom in callback"):
        ros.wait_for(lambda: False, 10, "never")
    ros.error = None   # handled
