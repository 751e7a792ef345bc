"""Camera node as a separate process: a video file plays at its own rate; missing cameras fail fast."""
import time

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lapa_models.data.video import write_video
from lapa_ros.bringup.graph import NodeSpec
from lapa_ros.interfaces.messages import rgb_from_compressed_msg, rgb_from_image_msg, stamp_to_sec
from lapa_ros.interfaces.ros_common import SENSOR_QOS

pytestmark = pytest.mark.timeout(120)


def camera(**params):
    return NodeSpec(name="camera", executable="camera_node", module="lapa_ros.nodes.camera",
                    config=("camera.yaml",), parameters=params)


def test_video_file_plays_at_its_own_frame_rate_and_loops(ros, start_graph, tmp_path):
    frames = np.zeros((10, 48, 64, 3), dtype=np.uint8)
    for i in range(10):
        frames[i, :, :, 0] = 20 * i  # frame number encoded in the red channel
    write_video(tmp_path / "clip.mp4", frames, fps=25)
    images, infos, jpegs = [], [], []
    ros.node.create_subscription(Image, "camera/image_raw", lambda m: images.append((time.monotonic(), m)), SENSOR_QOS)
    ros.node.create_subscription(CameraInfo, "camera/camera_info", infos.append, SENSOR_QOS)
    ros.node.create_subscription(CompressedImage, "camera/image_raw/compressed", jpegs.append, SENSOR_QOS)
    graph = start_graph([camera(backend="video", video_path=str(tmp_path / "clip.mp4"), publish_compressed=True)])
    ros.wait_for(lambda: len(images) > 5 or bool(graph.dead()), 60, "camera images")
    graph.check_alive()
    start = len(images)
    time.sleep(2.0)
    batch = images[start:]
    rate = (len(batch) - 1) / (batch[-1][0] - batch[0][0])
    assert 21 < rate < 29, f"{rate:.1f} Hz from a 25 fps file"
    reds = [int(rgb_from_image_msg(m)[0, 0, 0]) for _, m in batch]
    assert set(reds) == {20 * i for i in range(10)}, "every frame of the file, in a loop"
    stamps = [stamp_to_sec(m.header.stamp) for _, m in batch]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert infos[-1].width == 64 and infos[-1].height == 48 and infos[-1].k[0] > 0
    assert jpegs and rgb_from_compressed_msg(jpegs[-1]).shape == (48, 64, 3)


@pytest.mark.parametrize("params, message", [
    ({"backend": "realsense"}, "no RealSense camera found"),
    ({"backend": "realsense", "serial": "123456789"}, "no RealSense camera"),
    ({"backend": "v4l2", "device": "/dev/video42"}, "cannot open video device '/dev/video42'"),
    # Numbers for text parameters (`-p serial:=123456789`, a launch argument: both are read as YAML) are read
    # as text, not refused as the wrong type.
    ({"backend": "realsense", "serial": 123456789}, "no RealSense camera"),
    ({"backend": "v4l2", "device": 42}, "cannot open video device '42'"),
    ({"backend": "video", "video_path": "/nonexistent/clip.mp4"}, "video file not found"),
    ({"backend": "gopro"}, "must be one of realsense, v4l2, video"),
])
def test_missing_camera_stops_the_node_quickly_with_a_clear_error(start_graph, params, message):
    t0 = time.monotonic()
    graph = start_graph([camera(**params)])
    while not graph.dead():
        assert time.monotonic() - t0 < 30, "node did not exit"
        time.sleep(0.05)
    assert graph.dead()["camera"] == 1
    assert message in graph.log("camera")
    assert time.monotonic() - t0 < 15, "must fail fast, not after pipeline.start()'s 15 s wait"


def _camera_status(diags):
    for msg in reversed(diags):
        for status in msg.status:
            if status.name == "lapa_ros: camera":
                return status.level[0], status.message, {kv.key: kv.value for kv in status.values}
    return None


def test_a_camera_that_disappears_is_reported_and_reopened_without_a_traceback(ros, start_graph, tmp_path):
    """OpenCV opens a file path as it opens a device: deleting the file is a device that disappears."""
    import shutil

    from diagnostic_msgs.msg import DiagnosticArray

    from lapa_ros.interfaces.ros_common import COMMAND_QOS

    frames = np.zeros((30, 48, 64, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", frames, fps=30)
    device = tmp_path / "device.mp4"
    shutil.copy(tmp_path / "clip.mp4", device)
    images, diags = [], []
    ros.node.create_subscription(Image, "camera/image_raw", images.append, SENSOR_QOS)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, COMMAND_QOS)
    graph = start_graph([camera(backend="v4l2", device=str(device))])
    ros.wait_for(lambda: len(images) > 0 or bool(graph.dead()), 60, "camera images")
    graph.check_alive()
    device.unlink()
    ros.wait_for(lambda: (_camera_status(diags) or (0,))[0] == 2 or bool(graph.dead()), 20, "camera reported lost")
    graph.check_alive()
    level, message, values = _camera_status(diags)
    assert "camera lost, reopening" in message and values["state"] == "lost"
    time.sleep(1.5)
    n = len(images)
    time.sleep(1.0)
    assert len(images) == n, "no frames while the device is gone"
    shutil.copy(tmp_path / "clip.mp4", device)
    ros.wait_for(lambda: len(images) > n or bool(graph.dead()), 20, "images again once the device is back")
    graph.check_alive()
    log = graph.log("camera")
    assert "Traceback" not in log and "reopening the camera every 1 s" in log and "camera back after" in log


def test_a_video_without_loop_ends_once_and_reports_it(ros, start_graph, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    from lapa_ros.interfaces.ros_common import COMMAND_QOS

    write_video(tmp_path / "clip.mp4", np.zeros((10, 48, 64, 3), dtype=np.uint8), fps=25)
    images, diags = [], []
    ros.node.create_subscription(Image, "camera/image_raw", images.append, SENSOR_QOS)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, COMMAND_QOS)
    graph = start_graph([camera(backend="video", video_path=str(tmp_path / "clip.mp4"), loop=False)])
    ros.wait_for(lambda: (_camera_status(diags) or (0,))[0] == 1 or bool(graph.dead()), 60, "video reported ended")
    graph.check_alive()
    level, message, values = _camera_status(diags)
    assert values["state"] == "ended" and "video ended" in message and int(values["frames_published"]) == 10
    time.sleep(3.0)
    graph.check_alive()
    log = graph.log("camera")
    assert log.count("end of video after 10 frames") == 1 and "reopening" not in log, log
