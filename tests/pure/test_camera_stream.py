"""CameraStream: a camera that goes away is reopened, never kills the capture loop; a video that ends says so."""
import numpy as np
import pytest

from lapa_ros.core.cameras import CameraError, CameraStream, EndOfVideo, Frame, VideoFileSource


class FlakySource:
    """Delivers frames, then fails as scripted: each read pops the next step."""

    name = "fake"

    def __init__(self, reads, opens):
        self.reads, self.opens, self.closed = list(reads), list(opens), 0

    def open(self):
        step = self.opens.pop(0)
        if step is not None:
            raise step

    def read(self):
        step = self.reads.pop(0)
        if isinstance(step, BaseException):
            raise step
        return Frame(np.zeros((2, 2, 3), np.uint8), float(step))

    def close(self):
        self.closed += 1
        raise RuntimeError("already gone")   # closing a vanished device may fail too


def _stream(source):
    t = [0.0]
    stream = CameraStream(source, retry_period=1.0, clock=lambda: t[0],
                          sleep=lambda s: t.__setitem__(0, t[0] + s))
    return stream


def test_a_lost_camera_is_reopened_until_it_is_back_and_the_loop_never_raises():
    # A driver's own exception (AttributeError of a closed handle, a RuntimeError) counts as lost, as CameraError.
    source = FlakySource(reads=[1, AttributeError("'NoneType' object has no attribute 'read'"), 2,
                                RuntimeError("USB error"), 3],
                         opens=[CameraError("cannot open video device '/dev/video0'"), None, None])
    stream = _stream(source)
    assert stream.read().stamp == 1
    assert stream.read() is None and stream.state == "lost"
    assert "AttributeError" in stream.error
    (level, message), = stream.pop_messages()
    assert level == "error" and "reopening" in message
    assert stream.read() is None and stream.state == "lost" and "/dev/video0" in stream.error
    assert stream.read().stamp == 2 and stream.state == "ok"
    assert any("camera back after 2.0 s" in m for _, m in stream.pop_messages())
    assert stream.read() is None and stream.state == "lost"
    assert stream.read().stamp == 3 and stream.frames == 3


def test_a_video_that_does_not_loop_ends_once_and_says_so(tmp_path):
    pytest.importorskip("av")   # writing the clip needs PyAV (the main environment); the bare 3.10 / 3.12 checks skip
    from lapa_models.data.video import write_video

    write_video(tmp_path / "clip.mp4", np.zeros((3, 16, 16, 3), np.uint8), fps=100)
    source = VideoFileSource(str(tmp_path / "clip.mp4"), loop=False)
    source.open()
    stream = _stream(source)
    assert [stream.read() is not None for _ in range(3)] == [True, True, True]
    assert stream.read() is None and stream.state == "ended"
    (level, message), = stream.pop_messages()
    assert level == "warning" and "end of video after 3 frames" in message and "loop" in message
    assert stream.read() is None and stream.pop_messages() == [], "said once, never 'reopening'"
    try:
        source.read()
    except EndOfVideo:
        pass
    else:
        raise AssertionError("a finished video without loop must raise EndOfVideo")
