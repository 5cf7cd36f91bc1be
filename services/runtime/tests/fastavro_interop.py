"""fastavro side of the codec interop test (fastavro_interop.rs beside this file).

Given only an .avsc file, this script, with fastavro as the independent Avro
implementation:
  - reports the schema's Parsing Canonical Form and CRC-64-AVRO fingerprint;
  - writes single-object payloads (C3 01 + fingerprint, little endian, + datum) of
    the data it is given;
  - reads single-object payloads the Rust codec wrote, after checking their header.

stdin:  {"schema_file": path, "write": [datum, ...], "read": [hex payload, ...]}
stdout: {"pcf": str, "fingerprint": hex, "written": [hex], "read": [datum]}

Data crosses as JSON: Avro bytes as {"$bytes": hex}; timestamp-micros as integer
microseconds and date as integer days since the epoch (fastavro's datetime/date
objects are converted back).
"""

import datetime
import io
import json
import sys

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
EPOCH_DAY = datetime.date(1970, 1, 1)
MICROSECOND = datetime.timedelta(microseconds=1)


def from_json(value):
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def to_json(value):
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // MICROSECOND
    if isinstance(value, datetime.date):
        return (value - EPOCH_DAY).days
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def main():
    job = json.load(sys.stdin)
    with open(job["schema_file"], encoding="utf-8") as f:
        schema = parse_schema(json.load(f))
    pcf = to_parsing_canonical_form(schema)
    # fastavro returns the CRC-64-AVRO value as the hex of its little-endian bytes,
    # which is the header's byte order.
    fp = bytes.fromhex(fingerprint(pcf, "CRC-64-AVRO"))

    written = []
    for datum in job["write"]:
        out = io.BytesIO()
        out.write(MAGIC + fp)
        schemaless_writer(out, schema, from_json(datum))
        written.append(out.getvalue().hex())

    read = []
    for payload_hex in job["read"]:
        payload = bytes.fromhex(payload_hex)
        if payload[:2] != MAGIC:
            sys.exit(f"not single-object encoded: {payload_hex[:20]}")
        if payload[2:10] != fp:
            sys.exit(f"header fingerprint {payload[2:10].hex()} != fastavro's {fp.hex()}")
        read.append(to_json(schemaless_reader(io.BytesIO(payload[10:]), schema)))

    json.dump({"pcf": pcf, "fingerprint": fp.hex(), "written": written, "read": read}, sys.stdout)


if __name__ == "__main__":
    main()
