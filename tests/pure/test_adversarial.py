"""Property-based tests (hypothesis) of the pure core against hostile input: instruction text, log
sanitising, the event log, time checks, image decoding and the safety gate."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lapa_models.text import InstructionError, clean_instruction, printable
from lapa_ros.core.clock import FROM_FUTURE, STALE, ClockOffsetMonitor, input_age_problem
from lapa_ros.core.events import EventLog
from lapa_ros.core.images import ENCODINGS, ImageConversionError, decode
from lapa_ros.core.safety import SafetyGate, SafetyLimits

CONTROL = [chr(c) for c in list(range(0x20)) + [0x7f] + list(range(0x80, 0xa0))] + ["\u202e", "\u200b", "\u2028"]
settings.register_profile("lapa", deadline=None, max_examples=200)
settings.load_profile("lapa")


@given(st.text())
def test_printable_never_contains_a_control_character(text):
    out = printable(text)
    assert not any(c in out for c in CONTROL)
    assert len(out) <= 200 * 10 + 40   # every kept character escapes to at most 10


@given(st.text(min_size=201))
def test_printable_bounds_the_length_and_says_so(text):
    assert printable(text).endswith(f"({len(text) - 200} more characters)")


@given(st.text(alphabet=st.sampled_from(CONTROL + [" ", ".", "!", "?", "-"])))
def test_an_instruction_without_a_letter_or_digit_is_refused(text):
    with pytest.raises(InstructionError):
        clean_instruction(text)


PLAIN_CONTROL = [c for c in CONTROL if c not in "\x1b\x9b\x9d"]   # not escape-sequence introducers
ESCAPES = st.sampled_from(["\x1b[2J", "\x1b[1;31m", "\x1b]0;title\x07", "\x1b]8;;http://x\x1b\\", "\x9b5A", "\x1bc", "\x1b(B"])


@given(st.lists(st.one_of(st.sampled_from(PLAIN_CONTROL + [" "]), ESCAPES)),
       st.from_regex(r"[a-z]{1,12}( [a-z]{1,12}){0,4}", fullmatch=True),
       st.lists(st.one_of(st.sampled_from(PLAIN_CONTROL + [" "]), ESCAPES)))
def test_words_among_control_characters_and_escape_sequences_survive_cleaning(before, words, after):
    cleaned = clean_instruction("".join(before) + words + "".join(after))
    assert cleaned == words
    assert clean_instruction(cleaned) == cleaned   # idempotent


@given(st.one_of(st.none(), st.integers(), st.binary()))
def test_a_non_text_instruction_is_refused(value):
    with pytest.raises(InstructionError, match="must be text"):
        clean_instruction(value)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 1000)), min_size=1, max_size=200))
def test_event_log_reports_every_first_occurrence_and_accounts_for_every_event(events):
    log = EventLog(throttle=5.0)
    events = sorted(events, key=lambda e: e[1])
    reported, firsts = {}, set()
    for key, t in events:
        due = log.report(key, t)
        if due is not None:
            n, first = due
            reported[key] = reported.get(key, 0) + n
            if first:
                firsts.add(key)
    assert firsts == {k for k, _ in events}
    pending = {k: log._since[k] for k in log._since}
    for key in firsts:
        assert reported[key] + pending[key] == sum(1 for k, _ in events if k == key)
    for key in firsts:   # at most one line per throttle period (after the first)
        times = [t for k, t in events if k == key]
        assert reported[key] >= 1 and len([1 for _ in times]) >= reported[key]


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_input_age_problem_only_passes_recent_finite_stamps(now, stamp):
    problem = input_age_problem(now, stamp, max_age=0.2, future_tolerance=0.05)
    if problem is None:
        assert math.isfinite(now) and math.isfinite(stamp) and -0.05 <= now - stamp <= 0.2
    elif problem == FROM_FUTURE:
        assert stamp - now > 0.05
    elif problem == STALE:
        assert now - stamp > 0.2


@given(st.floats(-100, 100), st.lists(st.floats(0.0, 0.03), min_size=5, max_size=60))
def test_clock_monitor_finds_an_offset_whatever_the_jitter(offset, delays):
    m = ClockOffsetMonitor(window=50, future_tolerance=0.05, max_age=0.2)
    for i, d in enumerate(delays):
        arrival = 1000.0 + i * 0.05
        m.add(arrival - d + offset, arrival)   # the source stamps `offset` s ahead of us
    expected = "ahead" if -offset + min(delays[-50:]) < -0.05 else "behind" if -offset + min(delays[-50:]) > 0.2 else "ok"
    assert m.state() == expected


@given(st.sampled_from(sorted(ENCODINGS)), st.integers(1, 6), st.integers(1, 6), st.integers(0, 8),
       st.integers(-20, 20), st.booleans())
def test_decode_accepts_exactly_step_times_height_bytes(encoding, height, width, padding, extra, big):
    dtype, channels = ENCODINGS[encoding]
    step = width * channels * np.dtype(dtype).itemsize + padding
    data = bytes(max(0, step * height + extra))
    if extra == 0:
        out = decode(height, width, encoding, step, data, big)
        assert out.shape[:2] == (height, width)
    else:
        with pytest.raises(ImageConversionError):
            decode(height, width, encoding, step, data, big)


@given(st.binary(max_size=64), st.integers(-5, 10), st.integers(-5, 10), st.integers(-10, 100),
       st.text(max_size=8))
def test_decode_never_raises_anything_but_a_conversion_error(data, height, width, step, encoding):
    try:
        decode(height, width, encoding, step, data)
    except ImageConversionError:
        pass


finite = st.floats(-1e6, 1e6)
anything = st.floats(allow_nan=True, allow_infinity=True)


@given(st.lists(anything, min_size=3, max_size=3), st.lists(anything, min_size=3, max_size=3),
       st.lists(finite, min_size=3, max_size=3), st.one_of(st.floats(-1.0, 1.0), st.sampled_from([math.nan, math.inf])))
def test_the_gate_never_lets_out_a_non_finite_too_fast_or_old_command(linear, angular, ee, age):
    limits = SafetyLimits()
    gate = SafetyGate(limits)
    gate.arm(now=0.0)
    now = 10.0
    stamp = now - age if math.isfinite(age) else age
    cmd = gate.filter_twist(now, linear, angular, ee, stamp)
    assert np.all(np.isfinite(cmd.linear)) and np.all(np.isfinite(cmd.angular))
    assert np.linalg.norm(cmd.linear) <= limits.max_linear_speed + 1e-9
    assert np.linalg.norm(cmd.angular) <= limits.max_angular_speed + 1e-9
    if not cmd.hold:
        assert -limits.future_tolerance <= now - stamp <= limits.command_timeout
        assert np.all(np.isfinite(linear)) and np.all(np.isfinite(angular))
    else:
        assert not np.any(cmd.linear) and not np.any(cmd.angular)
