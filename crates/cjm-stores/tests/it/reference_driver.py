"""Drives the reference's stores for cjm-stores' tests.

Reads one JSON command per line on stdin and answers each with one JSON line on
stdout: {"ok": result} or {"error": "Type: message"}. Every call goes through
the reference's public classes (LocalPluginConfigStore, LocalEmpiricalResourceStore,
LocalSecretStore) exactly as a Python host would use them; `sql` alone reads a
database directly, to compare what is stored.
"""

import json
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cjm_plugin_system.core.config_store import LocalPluginConfigStore, PluginConfigRecord
from cjm_plugin_system.core.empirical_store import (
    LocalEmpiricalResourceStore,
    ResourceSample,
    compute_config_hash,
)
from cjm_plugin_system.core.secret_store import LocalSecretStore

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def config_record(record):
    if record is None:
        return None
    return {"config": record.config, "enabled": record.enabled, "updated_at": record.updated_at}


def empirical_record(record):
    if record is None:
        return None
    out = dict(record.__dict__)
    observed = record.last_observed
    out["last_observed"] = observed.isoformat()
    # Whole microseconds since the epoch, exact (a float timestamp would round).
    out["last_observed_micros"] = (observed - EPOCH) // timedelta(microseconds=1)
    return out


def sample(fields):
    return ResourceSample(
        cpu_percent=fields["cpu_percent"],
        memory_mb_peak=fields["memory_mb_peak"],
        gpu_memory_mb_peak=fields["gpu_memory_mb_peak"],
        duration_seconds=fields["duration_seconds"],
        success=fields["success"],
        observed_at=datetime.fromisoformat(fields["observed_at"]),
        api_usage=fields.get("api_usage"),
    )


def run(cmd):
    op = cmd["op"]
    if op == "ping":
        return "pong"
    if op == "defaults":
        return {
            "config": str(LocalPluginConfigStore().db_path),
            "empirical": str(LocalEmpiricalResourceStore().db_path),
            "secrets": str(LocalSecretStore().path),
        }
    if op.startswith("config_"):
        store = LocalPluginConfigStore(Path(cmd["db"]))
        if op == "config_set":
            record = PluginConfigRecord(config=cmd["config"], enabled=cmd["enabled"])
            store.set(cmd["name"], record)
            return record.updated_at
        if op == "config_set_many":
            for i in range(cmd["count"]):
                store.set(f"{cmd['prefix']}{i}", PluginConfigRecord(config={"i": i}))
            return cmd["count"]
        if op == "config_get":
            return config_record(store.get(cmd["name"]))
        if op == "config_list":
            return {name: config_record(r) for name, r in store.list_all().items()}
        if op == "config_delete":
            return store.delete(cmd["name"])
    if op == "emp_hash":
        return compute_config_hash(cmd["config"])
    if op.startswith("emp_"):
        store = LocalEmpiricalResourceStore(Path(cmd["db"]))
        if op == "emp_record":
            store.record_sample(
                cmd["instance_id"], cmd["plugin_name"], cmd["config_hash"], sample(cmd["sample"])
            )
            return None
        if op == "emp_get":
            return empirical_record(store.get_record(cmd["instance_id"], cmd["config_hash"]))
        if op == "emp_list":
            return [empirical_record(r) for r in store.list_records(cmd.get("plugin_name"))]
        if op == "emp_delete":
            return store.delete_record(cmd["instance_id"], cmd["config_hash"])
    if op.startswith("secret_"):
        store = LocalSecretStore(Path(cmd["dir"]))
        scope = cmd.get("scope")
        if op == "secret_set":
            store.set_secret(cmd["plugin"], cmd["key"], cmd["value"], scope=scope)
            return None
        if op == "secret_get":
            return store.get_secret(cmd["plugin"], cmd["key"], scope=scope)
        if op == "secret_delete":
            return store.delete_secret(cmd["plugin"], cmd["key"], scope=scope)
        if op == "secret_list":
            return store.list_keys(cmd["plugin"], scope=scope)
    if op == "sql":
        conn = sqlite3.connect(cmd["db"])
        try:
            rows = [list(row) for row in conn.execute(cmd["query"], cmd.get("params", []))]
            conn.commit()
            return rows
        finally:
            conn.close()
    raise ValueError(f"unknown op {op!r}")


def main():
    for line in sys.stdin:
        try:
            answer = {"ok": run(json.loads(line))}
        except Exception as e:  # reported to the test, which fails on it
            answer = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
