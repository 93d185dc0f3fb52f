"""Helpers for the scale-out tests: TensorBoard event files read back, a free port, a terminal-like stdout."""
import io
import os
import socket
import struct

from tensorboardX.proto import event_pb2


def read_events(folder):
    """Every Event of the event files in `folder` (TFRecord: length, its CRC, the record, the record's CRC)."""
    events = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), 'rb') as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack('<Q', data[pos:pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12:pos + 12 + length])
            events.append(event)
            pos += 12 + length + 4
    return events


def scalars(events):
    """{tag: [(step, value), ...]} of the scalar summaries."""
    found = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField('simple_value'):
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def histograms(events):
    return {value.tag: value.histo for event in events for value in event.summary.value if value.HasField('histo')}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Terminal(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self):
        return True
