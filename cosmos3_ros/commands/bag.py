# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""``cosmos3-ros bag info|recover``: inspect a rosbag2 bag, or rewrite a damaged one as a complete bag.

``bag info BAG`` prints what ``ros2 bag info`` shows (files, size, storage, duration, start and end, message counts
per topic with their types), also for a recording that was cut (killed, power loss, full disk), saying what is
missing. ``bag recover IN OUT`` reads what can be read from IN (every complete, CRC-valid MCAP chunk up to a cut,
skipping damaged chunks; the committed transactions of a sqlite3 bag) and writes it to OUT as a complete bag with its
index and ``metadata.yaml``; it prints the messages recovered per topic and what was lost. Neither changes IN.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

HELP = "inspect (info) or repair (recover) a rosbag2 bag, including recordings cut by a kill or a full disk"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommands and their arguments."""
    sub = parser.add_subparsers(dest="bag_command", required=True, metavar="SUBCOMMAND")
    info = sub.add_parser(
        "info", help="what ros2 bag info shows; works on cut bags", description="what ros2 bag info shows"
    )
    info.add_argument("bag", metavar="BAG", help="bag directory, or a single .mcap/.db3 file")
    recover = sub.add_parser(
        "recover",
        help="write what can be read from a damaged bag as a complete bag",
        description="write what can be read from a damaged bag as a complete bag",
    )
    recover.add_argument("in_bag", metavar="IN", help="bag directory, or a single .mcap/.db3 file")
    recover.add_argument("out_bag", metavar="OUT", help="output bag directory (must not exist)")
    recover.add_argument(
        "--storage", choices=["mcap", "sqlite3"], default="mcap", help="storage of OUT [default: mcap]"
    )


def run(args: argparse.Namespace) -> int:
    """Run the subcommand."""
    if args.bag_command == "info":
        print(format_info(bag_info(args.bag)))
        return 0
    result = recover_bag(args.in_bag, args.out_bag, storage=args.storage)
    print(format_recovery(result))
    return 0


# -- info -------------------------------------------------------------------------------------------------------------


def bag_info(path: str | Path) -> dict[str, Any]:
    """What :func:`format_info` prints, as a dict (``status`` is "complete" or says what is wrong)."""
    from cosmos3_ros.bags.reader import open_bag

    path = Path(path)
    with open_bag(path, allow_empty=True) as src:
        files = (
            [src.file] if src.file is not None else sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
        )
        count = src.message_count()
        info = {
            "path": str(path),
            "files": [f.name for f in files],
            "size": sum(f.stat().st_size for f in files if f.exists()),
            "storage": src.storage,
            "messages": count,
            "start": src.start_time if count else None,
            "end": src.end_time if count else None,
            "duration": src.duration if count else 0.0,
            "topics": [
                {"name": t.name, "type": t.msgtype, "count": t.count} for t in sorted(src.topics().values(), key=_key)
            ],
            "status": "complete" if src.note is None else src.note,
            "complete": src.note is None,
        }
        if src.scan is not None:
            scan = src.scan
            info["cut_bytes"] = scan.cut_bytes
            info["cut_messages"] = scan.cut_messages
            info["corrupt"] = [f"byte {offset}: {why}" for offset, why in scan.corrupt]
    return info


def _key(t: Any) -> str:
    return t.name


def _time(t: float | None) -> str:
    if t is None:
        return "-"
    when = dt.datetime.fromtimestamp(int(t), tz=dt.UTC)
    return f"{when:%b %d %Y %H:%M:%S}.{round((t % 1) * 1e9) % 1_000_000_000:09d} UTC ({t:.9f})"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def format_info(info: dict[str, Any]) -> str:
    """The ``ros2 bag info`` layout."""
    lines = [
        f"Files:             {', '.join(info['files']) or '-'}",
        f"Bag size:          {_size(info['size'])}",
        f"Storage id:        {info['storage']}",
        f"Duration:          {info['duration']:.9f}s",
        f"Start:             {_time(info['start'])}",
        f"End:               {_time(info['end'])}",
        f"Messages:          {info['messages']}",
    ]
    topics = info["topics"]
    for i, t in enumerate(topics):
        head = "Topic information: " if i == 0 else " " * 19
        lines.append(f"{head}Topic: {t['name']} | Type: {t['type']} | Count: {t['count']} | Serialization Format: cdr")
    if not topics:
        lines.append("Topic information: (none)")
    if info["complete"]:
        lines.append("Status:            complete")
    else:
        lines.append(f"Status:            NOT COMPLETE: {info['status']}")
    return "\n".join(lines)


# -- recover ----------------------------------------------------------------------------------------------------------


def recover_bag(in_bag: str | Path, out_bag: str | Path, *, storage: str = "mcap") -> dict[str, Any]:
    """Copy every readable message of ``in_bag`` into a new, complete bag ``out_bag``.

    Returns ``{"in_bag", "out_bag", "storage", "recovered": {topic: n}, "types": {topic: type}, "messages",
    "expected": {topic: n} or None, "lost": [sentences], "complete_input": bool}``. Raises ValueError (a BagError for
    an input with nothing readable) or FileExistsError.
    """
    from cosmos3_ros.bags.reader import open_bag
    from cosmos3_ros.bags.storage import DurableWriter, check_output_path
    from cosmos3_ros.bags.writer_thread import describe_error

    in_path, out = Path(in_bag), Path(out_bag)
    if not in_path.exists():
        raise FileNotFoundError(f"bag not found: {in_path}")
    check_output_path(out)
    with open_bag(in_path, allow_empty=True, recover=True) as src:
        writer = DurableWriter(out, storage=storage)
        writer.set_custom_data("cosmos3_ros.recovered_from", str(in_path))
        recovered: dict[str, int] = {t: 0 for t in src.topics()}
        types = {t.name: t.msgtype for t in src.topics().values()}
        try:
            writer.open()
            conns: dict[str, Any] = {}
            for topic, msgtype in types.items():
                conns[topic] = writer.add_connection(topic, msgtype, typestore=src.typestore)
            for conn, log_ns, raw in src.raw_messages():
                writer.write(conns[conn.topic], log_ns, raw)
                recovered[conn.topic] += 1
            writer.close()
        except OSError as exc:
            _give_up(writer)
            raise ValueError(f"writing {out} failed: {describe_error(exc)}") from exc
        except BaseException:
            _give_up(writer)
            shutil.rmtree(out, ignore_errors=True)
            raise
        expected = None
        lost = []
        if src.scan is not None:
            scan = src.scan
            if scan.expected_counts is not None:
                by_id = {c.id: c.topic for c in src.connections}
                expected = {}
                for cid, n in scan.expected_counts.items():
                    topic = by_id.get(cid, f"channel {cid}")
                    expected[topic] = expected.get(topic, 0) + n
            if scan.cut_bytes:
                more = f" (at least {scan.cut_messages} messages)" if scan.cut_messages else ""
                lost.append(f"the last {scan.cut_bytes} bytes of {scan.path.name} are a cut record{more}")
            if not scan.has_footer:
                lost.append(
                    "the input had no index (recording not closed): messages never written to it (at most its last "
                    "chunk / flush interval) can not be counted"
                )
            for offset, why in scan.corrupt:
                lost.append(f"skipped damaged data at byte {offset}: {why}")
        elif src.note:
            lost.append(src.note)
        if expected is not None:
            for topic, n in sorted(expected.items()):
                if n > recovered.get(topic, 0):
                    lost.append(f"{topic}: {n - recovered.get(topic, 0)} of {n} indexed messages missing")
    return {
        "in_bag": str(in_path),
        "out_bag": str(out),
        "storage": storage,
        "recovered": recovered,
        "types": types,
        "messages": sum(recovered.values()),
        "expected": expected,
        "lost": lost,
        "complete_input": not lost and src.note is None,
    }


def _give_up(writer: Any) -> None:
    try:
        writer.salvage()
        writer.close()
    except BaseException:
        try:
            writer.abort()
        except Exception:
            pass


def format_recovery(result: dict[str, Any]) -> str:
    """What ``bag recover`` prints."""
    lines = [f"recovered {result['messages']} messages from {result['in_bag']} into {result['out_bag']}:"]
    width = max((len(t) for t in result["recovered"]), default=0)
    for topic, n in sorted(result["recovered"].items()):
        want = (result["expected"] or {}).get(topic)
        of = f" of {want}" if want is not None else ""
        lines.append(f"  {topic:<{width}}  {n}{of}  ({result['types'][topic]})")
    if result["lost"]:
        lines.append("lost:")
        lines.extend(f"  {item}" for item in result["lost"])
    else:
        lines.append("nothing lost: the input was complete")
    return "\n".join(lines)
