"""call_service: a request whose answer does not come is sent again, only where that is safe.

The server here never answers its first request (an async callback that never completes: the request
is taken and no response is sent), which is what a client sees when the response is lost in discovery."""
import time

import pytest
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.task import Future
from std_srvs.srv import Trigger

from lapa_ros.interfaces.ros_common import call_service


def _server_losing_first_answer(ros, name):
    served = []

    async def handle(request, response):
        served.append(time.monotonic())
        if len(served) == 1:
            await Future()          # never done: no answer to this request
        response.success, response.message = True, f"answer {len(served)}"
        return response

    # Reentrant: the executor takes the next request while the first one's answer is still pending.
    ros.node.create_service(Trigger, name, handle, callback_group=ReentrantCallbackGroup())
    return served


def test_an_unanswered_idempotent_request_is_sent_again(ros):
    served = _server_losing_first_answer(ros, "probe_resend")
    client = ros.node.create_client(Trigger, "probe_resend")
    response = call_service(client, Trigger.Request(), timeout=15.0, resend_after=0.5)
    assert response.success and response.message == "answer 2"
    assert len(served) == 2


def test_a_request_that_must_run_once_is_not_resent_and_times_out_clearly(ros):
    served = _server_losing_first_answer(ros, "probe_once")
    client = ros.node.create_client(Trigger, "probe_once")
    with pytest.raises(TimeoutError, match=r"probe_once did not answer within 2 s \(1 request sent\)"):
        call_service(client, Trigger.Request(), timeout=2.0, resend_after=None)
    assert len(served) == 1


def test_a_missing_service_is_reported_as_missing(ros):
    client = ros.node.create_client(Trigger, "no_such_service")
    with pytest.raises(TimeoutError, match="no_such_service is not available"):
        call_service(client, Trigger.Request(), timeout=0.5)
