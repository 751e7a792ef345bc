"""Recorded episode bags -> training episodes (lapa_models.data format). No rclpy import.

    lapa bags convert bags/ data/my_demos                       # actions = the operator's commands
    lapa bags convert bags/ data/my_demos --actions deltas      # actions = next-state velocity

For every camera frame (the reference stream) the state and the action are aligned on header stamps
with lapa_ros.core.alignment, the code the policy node uses live:
  state   ee position (PoseStamped) and gripper (finger joint of JointState), nearest sample within
          --state-tolerance of the frame (the policy node looks them up the same way)
  action  commands: the operator's command in force just before the next frame (zero-order hold;
          no command within --command-max-age = the operator held still: zero velocity)
          deltas: (ee[i+1] - ee[i]) / (t[i+1] - t[i]), gripper = the commanded gripper (else the state)
Messages without a header (the Float64 gripper command) are placed on the frames' clock using the
bags' receive times and the median offset between the frames' receive times and stamps.

A bag is a rosbag2 folder or a single .mcap file; SRC is one bag or a folder of them (each subfolder
and each .mcap file in it is a bag of its own; other files are reported and left alone).
Bags whose outcome is not "success" are skipped (--include-failures keeps them), discarded ones are
never converted; each skipped bag gets one line with its name and the reason. Each bag succeeds or
fails on its own: one that cannot be converted (corrupt, truncated, an empty folder, a required topic
missing, timestamps that do not match, changed since it was converted into this dataset) gets one
line with its name and the reason, adds nothing to the dataset, and the others are still converted;
the exit code is then 2 (1 when nothing could be started: SRC missing or without bags).

Bags are only read, never modified. A truncated bag (recorder killed, interrupted copy: its MCAP file
ends without summary and footer) is refused, saying what is readable; `lapa bags recover` salvages it
on request, and the recovered episode is then converted with a WARNING line and "recovered": true in
its episode metadata (success stays the recording's own outcome flag). Each episode records the
fingerprint of its bag (MCAP size, mtime, sha256): running again skips the bags converted already and
refuses those that changed since, instead of keeping a stale copy.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from lapa_ros.recording.bags import (EPISODE_FILE, NOT_A_BAG, SOME_FAILED, BagError, EpisodeInfo, bag_file,
                                     bag_fingerprint, bag_name, printable, report_line, same_recording, scan_bags,
                                     truncation)
from lapa_ros.core import alignment, images
from lapa_ros.core.clock import stamp_to_sec
from lapa_models.data.robot_state import GripperMapping

ACTION_NAMES = ["vx", "vy", "vz", "gripper"]
STATE_NAMES = ["ee_x", "ee_y", "ee_z", "gripper"]


@dataclasses.dataclass
class ConversionConfig:
    image_topic: str = "/camera/image_raw"
    pose_topic: str = "/ee_pose"
    joint_topic: str = "/joint_states"
    twist_topic: str = "/arm_controller/twist_cmd"
    gripper_topic: str = "/arm_controller/gripper_cmd"
    actions: str = "commands"            # commands | deltas
    # The gripper mapping: None = the one each bag's recorder stored (lapa_ros.recording.bags.EpisodeInfo.gripper);
    # set all three to override it (e.g. bags recorded before the recorder stored it).
    gripper_joint: Optional[str] = None
    gripper_open_position: Optional[float] = None
    gripper_closed_position: Optional[float] = None
    image_size: Optional[Tuple[int, int]] = None
    state_tolerance: float = 0.05        # [s]
    command_max_age: float = 0.25        # [s]
    include_failures: bool = False
    min_frames: int = 5

    def gripper(self) -> Optional[GripperMapping]:
        """The mapping given by the user (all three fields), None to take each bag's."""
        given = [v is not None for v in (self.gripper_joint, self.gripper_open_position, self.gripper_closed_position)]
        if not any(given):
            return None
        if not all(given):
            raise ValueError("give all of the gripper joint, open and closed positions, or none (then each bag's "
                             "recorded mapping is used)")
        return GripperMapping(self.gripper_joint, self.gripper_open_position, self.gripper_closed_position)

    def for_bag(self, bag: Path) -> "ConversionConfig":
        """This configuration with the gripper mapping resolved for ``bag``: the user's, else the one its
        recorder stored; BagError when there is neither (the converter never guesses a robot's gripper)."""
        given = self.gripper()
        if given is not None:
            return self
        recorded = EpisodeInfo.load(bag).gripper
        if not recorded:
            raise BagError(f"{bag}: the bag does not say which joint_states joint is the gripper (recorded "
                           "before the recorder stored it, or with gripper_joint empty): pass --gripper-joint, "
                           "--gripper-open and --gripper-closed")
        try:
            g = GripperMapping.from_json(recorded, f"{bag}: recorded gripper mapping")
        except ValueError as e:
            raise BagError(str(e)) from None
        return dataclasses.replace(self, gripper_joint=g.joint, gripper_open_position=g.open_position,
                                   gripper_closed_position=g.closed_position)


@dataclasses.dataclass
class BagStreams:
    """The decoded streams of one bag: stamps [s] on the frames' clock, values as arrays."""

    frames: List[np.ndarray]
    frame_stamps: np.ndarray
    pose_stamps: np.ndarray
    poses: np.ndarray                    # (N, 3)
    joint_stamps: np.ndarray
    grippers: np.ndarray                 # (N,) gripper state from the finger joint
    twist_stamps: np.ndarray
    twists: np.ndarray                   # (N, 3)
    gripper_cmd_stamps: np.ndarray
    gripper_cmds: np.ndarray
    counts: Dict[str, int]
    camera_size: Tuple[int, int] = (0, 0)   # (H, W) of the camera's frames before any resize
    # joint_states messages that name the gripper joint without a position for it (skipped), described
    joint_without_position: List[str] = dataclasses.field(default_factory=list)


def read_streams(bag: Path, cfg: ConversionConfig) -> BagStreams:
    """Decode the topics the converter needs (mcap + mcap-ros2 reader) from a bag folder or .mcap file."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    mcap_file = bag_file(bag)
    gripper = cfg.gripper()
    wanted = {cfg.image_topic, cfg.pose_topic, cfg.joint_topic, cfg.twist_topic, cfg.gripper_topic}
    frames, frame_stamps, frame_recv = [], [], []
    pose_stamps, poses, joint_stamps, grippers = [], [], [], []
    twist_stamps, twists, gripper_recv, gripper_cmds = [], [], [], []
    counts: Dict[str, int] = {}
    camera_size = (0, 0)
    short_joint: List[str] = []          # where the gripper joint is named but has no position
    joint_messages = 0

    def take(schema, topic: str, message, msg) -> None:
        nonlocal camera_size, joint_messages
        if topic == cfg.image_topic:
            try:
                if schema.name.endswith("CompressedImage"):
                    rgb = images.decode_compressed(msg.format, msg.data)
                else:
                    arr = images.decode(msg.height, msg.width, msg.encoding, msg.step, msg.data,
                                        bool(msg.is_bigendian))
                    rgb = images.to_rgb8(arr, msg.encoding)
            except images.ImageConversionError as e:
                raise BagError(f"{bag}: topic {topic}: {e}") from e
            if not frames:
                camera_size = (int(rgb.shape[0]), int(rgb.shape[1]))
            if cfg.image_size is not None and rgb.shape[:2] != tuple(cfg.image_size):
                import cv2

                rgb = cv2.resize(rgb, (cfg.image_size[1], cfg.image_size[0]), interpolation=cv2.INTER_AREA)
            frames.append(rgb)
            frame_stamps.append(stamp_to_sec(msg.header.stamp))
            frame_recv.append(message.log_time * 1e-9)
        elif topic == cfg.pose_topic:
            p = msg.pose.position
            pose_stamps.append(stamp_to_sec(msg.header.stamp))
            poses.append((p.x, p.y, p.z))
        elif topic == cfg.joint_topic:
            names = list(msg.name)
            if gripper.joint in names:
                joint_messages += 1
                k = names.index(gripper.joint)
                if k >= len(msg.position):  # legal in ROS (e.g. effort-only joints): no gripper state here
                    short_joint.append(f"message {counts[topic]} (stamp {stamp_to_sec(msg.header.stamp):.3f} s: "
                                       f"{len(names)} names, {len(msg.position)} positions)")
                    return
                joint_stamps.append(stamp_to_sec(msg.header.stamp))
                grippers.append(gripper.state(msg.position[k]))
        elif topic == cfg.twist_topic:
            t = msg.twist.linear
            twist_stamps.append(stamp_to_sec(msg.header.stamp))
            twists.append((t.x, t.y, t.z))
        elif topic == cfg.gripper_topic:
            gripper_recv.append(message.log_time * 1e-9)
            gripper_cmds.append(float(msg.data))

    try:
        f = open(mcap_file, "rb")
    except OSError as e:
        raise BagError(f"{bag}: cannot read {mcap_file.name} ({e})") from e
    with f:
        try:  # errors of the readers: the file is damaged
            decoded = iter(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(
                topics=list(wanted)))
        except Exception as e:
            raise BagError(f"{bag}: corrupt bag ({type(e).__name__}: {e})") from e
        while True:
            try:
                schema, channel, message, msg = next(decoded)
            except StopIteration:
                break
            except Exception as e:  # damaged files raise many kinds of errors in the readers
                raise BagError(f"{bag}: corrupt bag, unreadable after {sum(counts.values())} messages "
                               f"({type(e).__name__}: {e})") from e
            topic = channel.topic
            counts[topic] = counts.get(topic, 0) + 1
            try:  # a message the reader decoded but this converter cannot use: name it
                take(schema, topic, message, msg)
            except BagError:
                raise
            except Exception as e:
                raise BagError(f"{bag}: topic {topic}, message {counts[topic]} (log time "
                               f"{message.log_time * 1e-9:.3f} s): cannot be used ({type(e).__name__}: {e})") from e
    if short_joint and not joint_stamps:
        raise BagError(f"{bag}: topic {cfg.joint_topic}: none of its {joint_messages} messages naming the gripper "
                       f"joint '{gripper.joint}' has a position for it (position shorter than name, e.g. "
                       f"{short_joint[0]}): the gripper state cannot be read")
    if not frames:
        raise BagError(f"{bag}: required topic {cfg.image_topic} has no messages "
                       f"(topics in the bag: {', '.join(sorted(counts)) or 'none'})")
    order = np.argsort(frame_stamps, kind="stable")
    frame_stamps = np.asarray(frame_stamps)[order]
    offset = float(np.median(np.asarray(frame_stamps) - np.asarray(frame_recv)[order]))
    return BagStreams(camera_size=camera_size, frames=[frames[i] for i in order], frame_stamps=frame_stamps,
                      pose_stamps=np.asarray(pose_stamps), poses=np.asarray(poses, dtype=np.float64).reshape(-1, 3),
                      joint_stamps=np.asarray(joint_stamps), grippers=np.asarray(grippers, dtype=np.float64),
                      twist_stamps=np.asarray(twist_stamps), twists=np.asarray(twists, dtype=np.float64).reshape(-1, 3),
                      gripper_cmd_stamps=np.asarray(gripper_recv) + offset,
                      gripper_cmds=np.asarray(gripper_cmds, dtype=np.float64), counts=counts,
                      joint_without_position=short_joint)


def _require(bag: Path, topic: str, stamps: np.ndarray, frame_stamps: np.ndarray, idx: np.ndarray, what: str,
             skipped: Optional[List[str]] = None) -> None:
    if len(stamps) == 0:
        raise BagError(f"{bag}: required topic {topic} has no messages ({what})")
    matched = float(np.mean(idx >= 0))
    if matched < 0.5:
        if skipped:  # the samples are missing, not the clocks different
            raise BagError(f"{bag}: topic {topic}: only {100 * matched:.0f}% of frames have a sample within "
                           f"tolerance: {len(skipped)} of its messages have no position for the gripper joint "
                           f"(position shorter than name, e.g. {skipped[0]})")
        lag = float(np.median(stamps) - np.median(frame_stamps))
        raise BagError(f"{bag}: topic {topic}: timestamps do not match the camera's (only {100 * matched:.0f}% of "
                       f"frames have a sample within tolerance; median offset {lag:+.3f} s: different clocks?)")


def streams_to_episode(bag: Path, s: BagStreams, cfg: ConversionConfig):
    """Aligned (frames, timestamps, states, actions) + a report."""
    from lapa_models.data.episodes import Episode

    t = s.frame_stamps
    n = len(t)
    if n < cfg.min_frames:
        raise BagError(f"{bag}: only {n} frames on {cfg.image_topic} (need {cfg.min_frames})")
    period = float(np.median(np.diff(t))) if n > 1 else 0.05
    pose_idx = alignment.nearest_indices(t, s.pose_stamps, cfg.state_tolerance) if len(s.pose_stamps) else np.full(n, -1)
    _require(bag, cfg.pose_topic, s.pose_stamps, t, pose_idx, "end-effector pose for the state")
    grip_idx = alignment.nearest_indices(t, s.joint_stamps, cfg.state_tolerance) if len(s.joint_stamps) else np.full(n, -1)
    _require(bag, cfg.joint_topic, s.joint_stamps, t, grip_idx,
             f"gripper joint '{cfg.gripper_joint}' for the state", s.joint_without_position)
    keep = (pose_idx >= 0) & (grip_idx >= 0)  # frames with a state; the others are dropped (reported)
    states = np.concatenate([s.poses[pose_idx], s.grippers[grip_idx][:, None]], axis=1).astype(np.float32)

    # The command in force just before the next frame answers this one.
    next_t = np.append(t[1:], t[-1] + period) - 1e-3
    grip_cmd_idx = alignment.previous_indices(next_t, s.gripper_cmd_stamps) if len(s.gripper_cmd_stamps) else np.full(n, -1)
    gripper_action = np.where(grip_cmd_idx >= 0, s.gripper_cmds[np.maximum(grip_cmd_idx, 0)] if len(s.gripper_cmds) else 0,
                              states[:, 3])
    held = 0
    if cfg.actions == "commands":
        if len(s.twist_stamps) == 0:
            raise BagError(f"{bag}: required topic {cfg.twist_topic} has no messages (actions from commands; "
                           "use --actions deltas to derive them from the states)")
        cmd_idx = alignment.previous_indices(next_t, s.twist_stamps, cfg.command_max_age)
        velocity = np.where(cmd_idx[:, None] >= 0, s.twists[np.maximum(cmd_idx, 0)], 0.0)
        held = int(np.sum(cmd_idx < 0))
    elif cfg.actions == "deltas":
        pos = states[:, :3].astype(np.float64)
        dt = np.diff(t)
        velocity = np.zeros((n, 3))
        velocity[:-1] = np.diff(pos, axis=0) / np.maximum(dt, 1e-6)[:, None]
        velocity[-1] = velocity[-2] if n > 1 else 0.0
    else:
        raise ValueError(f"actions must be 'commands' or 'deltas', got {cfg.actions!r}")
    actions = np.concatenate([velocity, gripper_action[:, None]], axis=1).astype(np.float32)
    if not np.all(np.isfinite(actions)):
        raise BagError(f"{bag}: topic {cfg.twist_topic}: NaN/Inf in the recorded commands")

    idx = np.flatnonzero(keep)
    if len(idx) < cfg.min_frames:
        raise BagError(f"{bag}: only {len(idx)} frames have a state within {cfg.state_tolerance} s")
    info = EpisodeInfo.load(bag)
    ts = t[idx] - t[idx[0]]
    gaps = alignment.find_gaps(t, period, factor=2.0)
    report = {"bag": str(bag), "frames": int(len(idx)), "dropped_frames_without_state": int(n - len(idx)),
              "duration": float(ts[-1]), "rate_hz": float((len(idx) - 1) / ts[-1]) if ts[-1] > 0 else 0.0,
              "gaps": [{"start": round(a - t[0], 3), "duration": round(d, 3)} for a, _, d in gaps],
              "frames_without_command": held, "topics": s.counts, "outcome": info.outcome,
              "instruction": info.instruction, "recovered": info.status == "recovered",
              "joint_states_without_gripper_position": len(s.joint_without_position)}
    episode = Episode(frames=np.stack([s.frames[i] for i in idx]), timestamps=ts, actions=actions[idx],
                      states=states[idx], instruction=info.instruction, task=info.task,
                      success=info.outcome == "success",
                      metadata={"source": "bag", "bag": bag_name(bag), "operator": info.operator,
                                "actions_from": cfg.actions, "outcome": info.outcome,
                                # cut off and salvaged by `lapa bags recover`: the end of the demonstration
                                # may be missing (success is still the recording's own outcome flag)
                                "recovered": info.status == "recovered"})
    return episode, report


def convert_bag(bag: Path, cfg: ConversionConfig):
    """One bag -> (episode, report); BagError naming it. The bag is only read, never modified: a bag whose
    MCAP file was cut short (recorder killed, interrupted copy) is refused, saying what is missing; the
    user may salvage it with `lapa bags recover` (then it converts, marked recovered).
    The report's "gripper" is the mapping its states were read with."""
    cut = truncation(bag)
    if cut is not None:
        raise BagError(f"{bag}: truncated recording: {cut}. Not converted: replace it with a complete copy, or "
                       f"run `lapa bags recover {bag}` to keep the readable part (rewrites the bag, the original "
                       "kept as .mcap.damaged; the episode is then marked recovered), or move it into discarded/")
    cfg = cfg.for_bag(bag)
    streams = read_streams(bag, cfg)
    episode, report = streams_to_episode(bag, streams, cfg)
    report["gripper"] = cfg.gripper().to_json()
    report["camera_frame_size"] = list(streams.camera_size)
    return episode, report


def _open_writer(out: Path, src: Path, episode, report: dict, cfg: ConversionConfig):
    from lapa_models.data.episodes import DatasetInfo, EpisodeWriter

    h, w = episode.frames.shape[1:3]
    fps = report["rate_hz"] or 20.0
    return EpisodeWriter(out, DatasetInfo(fps=round(fps, 3), image_height=h, image_width=w,
                                          action_names=ACTION_NAMES, state_names=STATE_NAMES, source="bags",
                                          gripper=report["gripper"],
                                          extra={"converted_from": str(src), "actions_from": cfg.actions,
                                                 # what a deployed policy's camera delivers (frames may be
                                                 # stored resized to a model's input)
                                                 "camera_frame_size": report["camera_frame_size"]}))


def _skip_reason(bag: Path, info: EpisodeInfo) -> str:
    """Why a bag whose outcome is not success is left out, and how to include it."""
    why = f"outcome {info.outcome}"
    if info.outcome == "unknown":
        bag = Path(bag)
        if (bag.parent if bag.is_file() else bag).joinpath(EPISODE_FILE).is_file():
            why += " (never marked a success" + (": the recorder was killed first)" if info.status == "recording"
                                                 else ")")
        else:
            why += f" (no {EPISODE_FILE}, and its rosbag2 metadata records no outcome but unknown)"
    return f"{why}; only successes are converted (--include-failures converts it anyway)"


def _already_converted(bag: Path, entry: dict, info: EpisodeInfo, out: Path) -> Optional[str]:
    """The skip reason of a bag whose episode is in the dataset and unchanged; BagError when the bag
    changed since (the dataset holds a stale copy of it)."""
    where = f"episode {entry.get('episode_index')} of {out}"
    recorded = entry.get("bag_fingerprint")
    if recorded is None:
        return f"already converted ({where}; converted without a fingerprint of the bag: changes cannot be seen)"
    changes = []
    if not same_recording(bag, recorded):
        now = bag_file(bag).stat().st_size
        changes.append(f"its MCAP file is not the one converted ({now} bytes now, {recorded.get('size')} then; "
                       "content differs)")
    if entry.get("instruction") != info.instruction:
        changes.append(f"instruction now {info.instruction!r}, {entry.get('instruction')!r} in the dataset")
    if bool(entry.get("success")) != (info.outcome == "success"):
        changes.append(f"outcome now {info.outcome}, success={entry.get('success')} in the dataset")
    if changes:
        raise BagError(f"{bag}: changed since it was converted as {where}: " + "; ".join(changes) +
                       f". The dataset still holds the old version: convert the bags into a new dataset (or delete "
                       f"{out} and convert again) to use the new one, or put the old bag back")
    return f"already converted ({where}, unchanged)"


def convert_bags(src: Path, out: Path, cfg: ConversionConfig, progress: bool = True) -> dict:
    """Convert every episode bag under ``src`` into the dataset ``out``; returns a summary with reports.

    Each bag is converted or fails on its own: a failure is listed in summary["failed"] (bag, error)
    and adds nothing to ``out``; a bag left out on purpose (not a success, already converted) is listed
    in summary["skipped"] (bag, reason); a recovered bag's episode gets a line in summary["warnings"].
    Entries of ``src`` that are not bags are listed in summary["ignored"]. A bag already in ``out``
    (same name) is skipped when it is the recording converted then (MCAP file's size and mtime, else its
    sha256; instruction and outcome), and fails when it changed. Bags are only read, never modified.
    BagError only when ``src`` itself cannot be used (missing, not a bag, no bag in it)."""
    from tqdm import tqdm

    cfg.gripper()   # a partial override is the whole command's error, not each bag's
    bags, ignored = scan_bags(Path(src))
    writer = None
    converted, skipped, failed, reports, warnings = [], [], [], [], []
    done: Dict[str, dict] = {}
    if (Path(out) / "meta" / "episodes.jsonl").exists():
        from lapa_models.data.episodes import EpisodeDataset

        done = {e.get("bag"): e for e in EpisodeDataset(out).entries}
    for bag in tqdm(bags, desc="convert bags", unit="bag", disable=not progress, file=sys.stderr):
        try:
            bag_file(bag)  # garbage or an empty folder fails here, whatever outcome it would have
            info = EpisodeInfo.load(bag)
            if bag_name(bag) in done:
                skipped.append({"bag": str(bag), "reason": _already_converted(bag, done[bag_name(bag)], info, Path(out))})
                continue
            if info.outcome != "success" and not cfg.include_failures:
                cut = truncation(bag)
                skipped.append({"bag": str(bag), "reason": _skip_reason(bag, info) +
                                (f"; besides, a truncated recording: {cut}" if cut else "")})
                continue
            fingerprint = bag_fingerprint(bag)
            episode, report = convert_bag(bag, cfg)
            episode.metadata["bag_fingerprint"] = fingerprint
            if writer is None:
                writer = _open_writer(Path(out), Path(src), episode, report, cfg)
            if report["gripper"] != writer.info.gripper:   # one dataset, one robot's gripper
                raise BagError(f"{bag}: recorded with gripper mapping {report['gripper']}, but the dataset's is "
                               f"{writer.info.gripper}: convert bags of different robots into different datasets")
            index = writer.write(episode)
            done[bag_name(bag)] = {"episode_index": index, "bag_fingerprint": fingerprint,
                                   "instruction": episode.instruction, "success": episode.success}
            converted.append(bag.name)
            reports.append(report)
            if report["recovered"]:
                warnings.append({"bag": str(bag), "warning": (
                    f"recovered from a cut-off recording (`lapa bags recover`): the end of the demonstration may "
                    f"be missing; {report['frames']} frames, {report['duration']:.1f} s kept; marked recovered in "
                    f"the dataset, success={episode.success} (the recording's own outcome: {info.outcome})")})
            if report["joint_states_without_gripper_position"]:
                warnings.append({"bag": str(bag), "warning": (
                    f"{report['joint_states_without_gripper_position']} {cfg.joint_topic} message(s) without a "
                    f"position for the gripper joint '{report['gripper']['joint']}' were skipped (position "
                    "shorter than name)")})
        except (BagError, ValueError, OSError) as e:  # this bag only: the others are still converted
            failed.append({"bag": str(bag), "error": str(e)})
    summary = {"out": str(out), "converted": len(converted), "skipped": skipped, "failed": failed,
               "warnings": warnings, "ignored": [str(p) for p in ignored], "episodes": reports}
    if converted:
        (Path(out) / "meta" / "conversion_report.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_problems(summary: dict, file=None, indent: str = "") -> None:
    """One line per entry that is not a bag, per bag skipped, per warning and per bag that failed, with its
    name and the reason."""
    for path in summary["ignored"]:
        print(indent + report_line("ignored", Path(path), NOT_A_BAG), file=file)
    for s in summary["skipped"]:
        print(indent + report_line("skipped", Path(s["bag"]), s["reason"]), file=file)
    for w in summary.get("warnings", ()):
        print(indent + report_line("WARNING", Path(w["bag"]), w["warning"]), file=file)
    for f in summary["failed"]:
        print(indent + report_line("FAILED", Path(f["bag"]), f["error"]), file=file)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="a folder of episode bags (or one bag)")
    p.add_argument("out", help="episode dataset to write (appends if it exists)")
    p.add_argument("--actions", choices=["commands", "deltas"], default="commands")
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--include-failures", action="store_true")
    p.add_argument("--image-topic", default=ConversionConfig.image_topic)
    p.add_argument("--gripper-joint", default=None,
                   help="finger joint of joint_states giving the gripper state (default: what each bag's recorder "
                        "stored; give it with --gripper-open and --gripper-closed for bags that lack it)")
    p.add_argument("--gripper-open", type=float, default=None, help="that joint's position when open")
    p.add_argument("--gripper-closed", type=float, default=None, help="that joint's position when closed")
    p.add_argument("--state-tolerance", type=float, default=ConversionConfig.state_tolerance)


def main(args: argparse.Namespace) -> int:
    cfg = ConversionConfig(actions=args.actions, image_size=tuple(args.image_size) if args.image_size else None,
                           include_failures=args.include_failures, image_topic=args.image_topic,
                           gripper_joint=args.gripper_joint, gripper_open_position=args.gripper_open,
                           gripper_closed_position=args.gripper_closed, state_tolerance=args.state_tolerance)
    try:
        summary = convert_bags(Path(args.src), Path(args.out), cfg)
    except (BagError, ValueError) as e:  # the source or the output dataset as a whole cannot be used
        print(printable(f"lapa bags convert: {e}"), file=sys.stderr)
        return 1
    for r in summary["episodes"]:
        print(printable(f"{Path(r['bag']).name}: {r['frames']} frames, {r['duration']:.1f} s at "
                        f"{r['rate_hz']:.1f} Hz, {len(r['gaps'])} gap(s), {r['frames_without_command']} frame(s) "
                        "without command"))
    print_problems(summary)
    print(json.dumps({k: summary[k] for k in ("out", "converted")} |
                     {"skipped": len(summary["skipped"]), "failed": len(summary["failed"])}))
    return SOME_FAILED if summary["failed"] else 0
