"""rosbag2 MCAP bags, one per teleoperated episode: writing, reading, recovering. No rclpy import.

Written with `rosbags` from serialized CDR bytes (what a raw subscription delivers), zstd-compressed
chunks. Each episode bag is a rosbag2 directory:

    <bag>/<bag>.mcap          the messages (readable by rosbags and by the mcap + mcap-ros2 readers)
    <bag>/metadata.yaml       rosbag2 metadata; `custom_data` holds instruction, operator, outcome
    <bag>/lapa_episode.json   the same episode facts, written at start and on every change, so a
                              recorder killed mid-episode still leaves them

A bag is such a rosbag2 directory or a single .mcap file (for instance the one inside a bag
directory, copied out): every reader here accepts both. A single file's episode facts come from the
lapa_episode.json beside it when there is one, else from the rosbag2 metadata the MCAP file carries.

A recorder killed mid-episode leaves an MCAP file without its summary and no metadata.yaml (an
interrupted copy leaves one without its summary beside a metadata.yaml): such a bag is incomplete,
the converter refuses it, and `recover_bag` (`lapa bags recover`, on the user's request only) reads every
complete chunk with a streaming reader and rewrites a complete bag marked "recovered".
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from lapa_models.text import printable as _printable

EPISODE_FILE = "lapa_episode.json"
OUTCOMES = ("success", "failure", "unknown")
MCAP_MAGIC = b"\x89MCAP0\r\n"    # first and last 8 bytes of a complete MCAP file
NOT_A_BAG = "not a bag (neither a rosbag2 folder nor a .mcap file)"
SOME_FAILED = 2                   # exit code of the bag commands when some bags failed (the others done)


class BagError(RuntimeError):
    """A bag that cannot be read or written; the message names the bag (and topic)."""


class DiskFullError(BagError):
    """Writing stopped because the disk (or the file size limit) is full; what was written is kept."""


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


@dataclasses.dataclass
class EpisodeInfo:
    instruction: str = ""
    operator: str = ""
    outcome: str = "unknown"        # success | failure | unknown
    task: str = ""
    started: float = 0.0            # wall clock [s]
    stopped: float = 0.0
    status: str = "recording"       # recording | complete | recovered | discarded
    # How joint_states give the gripper state on the robot that recorded (GripperMapping JSON: joint,
    # open_position, closed_position); the bag converter reads it, so a dataset, and the model card of
    # the policy finetuned on it, map the gripper as that robot does. None: not recorded.
    gripper: Optional[Dict[str, Any]] = None

    @classmethod
    def load(cls, bag: Path) -> "EpisodeInfo":
        """The facts of a bag directory, or of a single .mcap file (the episode file beside it, else
        the lapa.* custom_data of the rosbag2 metadata inside it); defaults when there are none."""
        bag = Path(bag)
        path = (bag.parent if bag.is_file() else bag) / EPISODE_FILE
        if not path.is_file():
            facts = _metadata_facts(bag)
            return cls(**{"status": "complete", **facts}) if facts else cls()
        try:
            d = json.loads(path.read_text())
        except ValueError as e:  # bad JSON or bytes that are not text
            raise BagError(f"{path}: corrupt episode file ({e})") from e
        if not isinstance(d, dict):
            raise BagError(f"{path}: corrupt episode file (not a JSON object)")
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})

    def save(self, bag: Path) -> None:
        tmp = Path(bag) / (EPISODE_FILE + ".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2))
        os.replace(tmp, Path(bag) / EPISODE_FILE)


class EpisodeBagWriter:
    """Writes one episode bag from serialized messages. Not thread-safe: one writer thread owns it."""

    def __init__(self, path: Path, info: EpisodeInfo, compress: bool = True):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path}: already exists")
        self.info = info
        self._typestore = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        if compress:
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._connections: Dict[str, object] = {}
        self.counts: Dict[str, int] = {}
        self.bytes_written = 0
        try:
            self._writer.open()
            info.save(self.path)
        except OSError as e:
            raise _disk_error(e, self.path) from e

    def add_topic(self, topic: str, msgtype: str) -> None:
        """msgtype as 'sensor_msgs/msg/Image'."""
        if topic in self._connections:
            return
        if msgtype not in self._typestore.fielddefs:
            raise BagError(f"{self.path}: topic {topic}: message type {msgtype} is unknown to the bag writer")
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self._typestore)
        self.counts[topic] = 0

    def write(self, topic: str, stamp_ns: int, data: bytes) -> None:
        try:
            self._writer.write(self._connections[topic], int(stamp_ns), data)
        except OSError as e:
            raise _disk_error(e, self.path) from e
        self.counts[topic] += 1
        self.bytes_written += len(data)

    def close(self, outcome: Optional[str] = None, status: str = "complete") -> Path:
        if outcome is not None:
            self.info.outcome = outcome
        self.info.stopped = self.info.stopped or time.time()
        self.info.status = status
        for key in ("instruction", "operator", "outcome", "task", "status"):
            self._writer.set_custom_data(f"lapa.{key}", str(getattr(self.info, key)))
        if self.info.gripper:
            self._writer.set_custom_data("lapa.gripper", json.dumps(self.info.gripper))
        try:
            self._writer.close()
            self.info.save(self.path)
        except OSError as e:
            raise _disk_error(e, self.path) from e
        return self.path

    def abort(self) -> None:
        """Give up on a bag that can no longer be written (disk full): keep what is on disk."""
        try:
            self._writer.close()
        except Exception:
            pass
        self.info.status = "recording"  # incomplete: recover_bag will rebuild its index
        try:
            self.info.save(self.path)
        except OSError:
            pass


def _disk_error(e: OSError, path: Path) -> BagError:
    if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return DiskFullError(f"{path}: disk full ({os.strerror(e.errno)}): recording stopped, "
                             "messages written so far are kept")
    return BagError(f"{path}: write failed: {e}")


def output_dir_problem(folder: Path) -> Optional[str]:
    """Why episode bags cannot be written into ``folder`` (made here if missing), or None when they can."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{folder} exists and is not a folder"
    except OSError as e:
        return f"cannot create {folder}: {e.strerror or e}"
    if not folder.is_dir():
        return f"{folder} exists and is not a folder"
    probe = folder / f".lapa_write_test_{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return f"cannot write in {folder}: {e.strerror or e}"
    return None


def set_outcome(bag: Path, outcome: str) -> None:
    """Record the outcome of a finished bag (episode file and metadata.yaml custom_data)."""
    import yaml

    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    bag = Path(bag)
    info = EpisodeInfo.load(bag)
    info.outcome = outcome
    info.save(bag)
    meta = bag / "metadata.yaml"
    if meta.is_file():
        doc = yaml.safe_load(meta.read_text())
        doc["rosbag2_bagfile_information"].setdefault("custom_data", {})["lapa.outcome"] = outcome
        tmp = meta.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.replace(tmp, meta)


def discard_bag(path: Path) -> Path:
    """Move a bag into a `discarded/` folder beside it (never deleted outright)."""
    path = Path(path)
    target = path.parent / "discarded" / path.name
    target.parent.mkdir(exist_ok=True)
    info = EpisodeInfo.load(path)
    info.status = "discarded"
    info.save(path)
    shutil.move(str(path), str(target))
    return target


# ---------------------------------------------------------------------------- reading
def printable(text: object) -> str:
    """Text for one terminal line: control characters of file names and library messages escaped
    (lapa_models.text.printable), long enough for paths and library messages."""
    return _printable(text, limit=4000)


def report_line(kind: str, bag: Path, error) -> str:
    """`<kind> <bag name>: <reason>` on one line (the reason without the bag's path in front)."""
    return printable(f"{kind} {Path(bag).name}: {str(error).removeprefix(f'{bag}: ')}")


def _left_out(path: Path) -> bool:
    """What a folder of bags holds besides bags: discarded/, hidden names, recover_bag's .damaged files."""
    return path.name == "discarded" or path.name.startswith(".") or path.suffix == ".damaged"


def scan_bags(path: Path) -> Tuple[List[Path], List[Path]]:
    """(bags, entries that are not bags) of ``path``: one bag, or a folder of bags.

    A folder with metadata.yaml or the recorder's episode file is one bag; a .mcap file is one bag.
    In a folder of bags each .mcap file and each subfolder is a bag of its own (an empty or broken one
    fails when it is read, naming it), except subfolders that hold files but none of a bag's (no
    metadata.yaml, episode file, .mcap or .db3: e.g. a session's logs/); those and other files are
    returned as not bags, for the caller to report.
    BagError when ``path`` does not exist, is some other file, or holds no bag."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: does not exist")
    if path.is_file():
        if path.suffix != ".mcap":
            raise BagError(f"{path}: {NOT_A_BAG}")
        return [path], []
    if (path / "metadata.yaml").exists() or (path / EPISODE_FILE).exists():
        return [path], []
    entries = sorted(p for p in path.iterdir() if not _left_out(p))
    bags = [p for p in entries if (p.is_dir() and _may_be_bag(p)) or p.suffix == ".mcap"]
    if not bags:
        raise BagError(f"{path}: {'empty folder' if not any(path.iterdir()) else 'no bag in this folder'} "
                       "(expected rosbag2 folders or .mcap files)")
    return bags, [p for p in entries if p not in bags]


def _may_be_bag(folder: Path) -> bool:
    """Empty (a recording that died early: reported when read) or holding any file a bag has."""
    files = list(folder.iterdir())
    return not files or any(f.name in ("metadata.yaml", EPISODE_FILE) or f.suffix in (".mcap", ".db3")
                            or f.name.endswith(".mcap.damaged") for f in files)


def find_bags(folder: Path) -> List[Path]:
    """The bags of ``folder`` (a bag itself, or a folder of bags): see scan_bags."""
    return scan_bags(folder)[0]


def bag_name(bag: Path) -> str:
    """The episode's name: a bag directory's name, a single file's stem (<bag>/<bag>.mcap is <bag>)."""
    bag = Path(bag)
    return bag.stem if bag.is_file() else bag.name


def bag_file(bag: Path) -> Path:
    """The MCAP file of a bag (the bag itself when it is a file); BagError saying why there is none."""
    bag = Path(bag)
    files = sorted(bag.glob("*.mcap")) if bag.is_dir() else [bag] if bag.is_file() else []
    if not files:
        empty = bag.is_dir() and not any(bag.iterdir())
        raise BagError(f"{bag}: {'empty folder, ' if empty else ''}no .mcap file")
    try:
        with open(files[0], "rb") as f:
            head = f.read(len(MCAP_MAGIC))
    except OSError as e:
        raise BagError(f"{files[0]}: cannot read ({e})") from e
    if head != MCAP_MAGIC:
        raise BagError(f"{files[0]}: {'empty file' if not head else 'not an MCAP file (garbage or another format)'}")
    return files[0]


def _closed(mcap: Path) -> bool:
    """The MCAP file ends with its magic: it was closed, summary and footer written."""
    try:
        with open(mcap, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 2 * len(MCAP_MAGIC):
                return False
            f.seek(-len(MCAP_MAGIC), os.SEEK_END)
            return f.read() == MCAP_MAGIC
    except OSError:
        return False


def _custom_facts(doc: Any) -> Dict[str, Any]:
    """instruction/operator/outcome/task/status/gripper from the lapa.* custom_data of rosbag2 metadata."""
    if not isinstance(doc, dict):
        return {}
    info = doc.get("rosbag2_bagfile_information", doc)   # with or without the wrapper
    custom = (info.get("custom_data") if isinstance(info, dict) else None) or {}
    if not isinstance(custom, dict):
        return {}
    keys = {"instruction", "operator", "outcome", "task", "status"}
    facts: Dict[str, Any] = {k[5:]: str(v) for k, v in custom.items() if k.startswith("lapa.") and k[5:] in keys}
    if custom.get("lapa.gripper"):
        facts["gripper"] = json.loads(str(custom["lapa.gripper"]))
    return facts


def _embedded_facts(mcap: Path) -> Dict[str, Any]:
    """The episode facts of the rosbag2 metadata that a closed MCAP file carries ({} when it has none)."""
    import yaml
    from mcap.reader import make_reader

    if not _closed(mcap):
        return {}
    try:
        with open(mcap, "rb") as f:
            records = [m for m in make_reader(f).iter_metadata() if m.name == "rosbag2"]
        return _custom_facts(yaml.safe_load(records[0].metadata["serialized_metadata"]) if records else None)
    except Exception:  # a damaged file: no facts here; the readers report what is wrong with it
        return {}


def _metadata_facts(bag: Path) -> Dict[str, Any]:
    """The episode facts of a bag without its episode file: a bag folder's metadata.yaml (what the recorder
    wrote on closing the bag), else the rosbag2 metadata inside its (closed) MCAP file; {} when neither has."""
    import yaml

    bag = Path(bag)
    if bag.is_file():
        return _embedded_facts(bag)
    try:
        facts = _custom_facts(yaml.safe_load((bag / "metadata.yaml").read_text()))
    except Exception:  # missing or unreadable: bag_topics and the readers report it
        facts = {}
    if facts:
        return facts
    files = sorted(bag.glob("*.mcap"))
    return _embedded_facts(files[0]) if files else {}


def is_complete(bag: Path) -> bool:
    """A bag directory with its metadata.yaml and an MCAP file that was closed, or a single MCAP file that
    was closed. (An MCAP file cut short later, e.g. by an interrupted copy, makes its bag incomplete.)"""
    bag = Path(bag)
    if bag.is_file():
        return _closed(bag)
    if not (bag / "metadata.yaml").is_file():
        return False
    files = sorted(bag.glob("*.mcap"))
    return not files or _closed(files[0])


def truncation(bag: Path) -> Optional[str]:
    """None for a bag whose MCAP file was closed; else what is missing, for an error message: the file, its
    size, the messages readable before the cut and how many the bag's metadata says were recorded."""
    import yaml

    bag = Path(bag)
    mcap = bag_file(bag)
    if _closed(mcap):
        return None
    size = mcap.stat().st_size
    counts = dict(readable_messages(mcap)[2])
    recorded: Dict[str, int] = {}
    if bag.is_dir():
        try:
            info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            recorded = {t["topic_metadata"]["name"]: int(t["message_count"]) for t in info["topics_with_message_count"]}
        except Exception:  # no metadata.yaml (recorder killed) or not rosbag2's: counts unknown
            recorded = {}
    topics = sorted(set(counts) | set(recorded))
    readable = ", ".join(f"{t} {counts.get(t, 0)}" + (f" of {recorded[t]}" if t in recorded else "")
                         for t in topics) or "none"
    return (f"{mcap.name} ({size} bytes) ends without the MCAP summary and footer: the recording is cut off "
            f"(the recorder was killed, or the file was cut short when copied); messages readable before the cut"
            f"{' (of those recorded)' if recorded else ''}: {readable}")


def bag_topics(bag: Path) -> Dict[str, Tuple[str, int]]:
    """topic -> (msgtype, message count) from the summary of a complete bag's MCAP file (a bag folder's
    metadata.yaml must parse too: ros2 bag and rosbags refuse the bag otherwise)."""
    import yaml
    from mcap.reader import make_reader

    bag = Path(bag)
    if not is_complete(bag):
        raise BagError(f"{bag}: incomplete bag (no metadata.yaml, or an MCAP file never closed; the recorder "
                       f"was killed?): run `lapa bags recover {bag}`")
    if bag.is_dir():
        try:
            meta = yaml.safe_load((bag / "metadata.yaml").read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise BagError(f"{bag}: unreadable metadata.yaml ({type(e).__name__})") from e
        if not isinstance(meta, dict) or "rosbag2_bagfile_information" not in meta:
            raise BagError(f"{bag}: metadata.yaml is not rosbag2 metadata")
    try:
        with open(bag_file(bag), "rb") as f:
            summary = make_reader(f).get_summary()
    except Exception as e:  # the mcap reader raises several error types for damaged files
        raise BagError(f"{bag}: cannot open ({type(e).__name__}: {e})") from e
    if summary is None or summary.statistics is None:
        raise BagError(f"{bag}: the MCAP file has no summary (not closed?): run `lapa bags recover {bag}`")
    out: Dict[str, Tuple[str, int]] = {}
    counts = summary.statistics.channel_message_counts
    for cid, channel in summary.channels.items():
        schema = summary.schemas.get(channel.schema_id)
        _, n = out.get(channel.topic, ("", 0))
        out[channel.topic] = (schema.name if schema else "", n + counts.get(cid, 0))
    return out


def readable_messages(mcap: Path):
    """(schemas {id: name}, channels {id: (topic, msgtype)}, {topic: message count}) of every whole record
    before the cut of an MCAP file, read with a streaming reader (no summary needed)."""
    return _stream(mcap, keep=False)


def _stream(mcap: Path, keep: bool):
    from mcap.stream_reader import StreamReader

    schemas: Dict[int, str] = {}
    channels: Dict[int, Tuple[str, str]] = {}
    counts: Dict[str, int] = {}
    messages: List[Tuple[int, int, bytes]] = []
    with open(mcap, "rb") as f:
        try:
            for record in StreamReader(f, skip_magic=False, emit_chunks=False).records:
                kind = type(record).__name__
                if kind == "Schema":
                    schemas[record.id] = record.name
                elif kind == "Channel":
                    channels[record.id] = (record.topic, schemas.get(record.schema_id, ""))
                elif kind == "Message" and record.channel_id in channels:
                    topic = channels[record.channel_id][0]
                    counts[topic] = counts.get(topic, 0) + 1
                    if keep:
                        messages.append((record.channel_id, record.log_time, bytes(record.data)))
        except Exception:  # the cut: everything before it has been read
            pass
    return (schemas, channels, messages) if keep else (schemas, channels, counts)


def recover_bag(bag: Path) -> Dict[str, int]:
    """Rebuild a complete bag from an MCAP file cut short (recorder killed, interrupted copy): keeps every
    whole chunk. This REWRITES THE BAG IN PLACE; only `lapa bags recover` (the user's explicit request)
    calls it, the bag converter never does.

    A bag directory gets a new <bag>.mcap, metadata.yaml and episode file (status "recovered", the
    outcome the recording had); a single-file bag is rewritten as the same file name. The damaged file
    is kept beside it as <name>.mcap.damaged. Returns message counts per topic."""
    bag = Path(bag)
    src = bag_file(bag)
    info, name, single = EpisodeInfo.load(bag), bag_name(bag), bag.is_file()
    damaged = src.with_suffix(".mcap.damaged")
    if damaged.exists():
        raise BagError(f"{bag}: {damaged.name} already exists (the original of an earlier recovery): move it "
                       "away first, it is not overwritten")
    os.replace(src, damaged)
    try:
        schemas, channels, messages = _stream(damaged, keep=True)
    except OSError as e:
        os.replace(damaged, src)
        raise BagError(f"{bag}: cannot read {src.name}: {e}") from e
    if not channels:
        os.replace(damaged, src)
        raise BagError(f"{bag}: nothing recoverable in {src.name} (cut before the first chunk)")
    info.status = "recovered"
    tmp = bag.parent / ".recovering" / name  # the bag's own name: metadata.yaml refers to <name>.mcap
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(exist_ok=True)
    writer = EpisodeBagWriter(tmp, info)
    for topic, msgtype in channels.values():
        writer.add_topic(topic, msgtype)
    for cid, t, data in messages:
        writer.write(channels[cid][0], t, data)
    writer.close(info.outcome, status="recovered")
    moves = [(tmp / f"{name}.mcap", bag)] if single else [(f, bag / f.name) for f in tmp.iterdir()]
    for f, target in moves:
        os.replace(f, target)
    shutil.rmtree(tmp)
    try:
        tmp.parent.rmdir()
    except OSError:
        pass
    return dict(writer.counts)


def bag_fingerprint(bag: Path) -> Dict[str, Any]:
    """What identifies a bag's recording, stored with its converted episode: size, modification time and
    sha256 of its MCAP file (the same for a bag folder and for its MCAP file copied out)."""
    import hashlib

    mcap = bag_file(bag)
    st = mcap.stat()
    digest = hashlib.sha256()
    with open(mcap, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"file": mcap.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}


def same_recording(bag: Path, recorded: Dict[str, Any]) -> bool:
    """Whether ``bag`` still holds the recording ``recorded`` (a bag_fingerprint): same size and
    modification time, else (a copy has a new one) the same content."""
    st = bag_file(bag).stat()
    if st.st_size != recorded.get("size"):
        return False
    if st.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    return bag_fingerprint(bag)["sha256"] == recorded.get("sha256")
