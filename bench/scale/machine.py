#!/usr/bin/env python3
"""Writes the machine a scale run ran on as JSON: CPU model and count, memory, kernel, the
Rust toolchain, the Go version each baseline binary was built with, the checkout's git revision
at the start, our binary's SHA-256 and modification time (the revision says which sources were
checked out, not which ones the binary was built from) and the load average at the start.

Usage: machine.py OUT.json KD_BIN [BASELINE_BIN...]
"""
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        return f"unavailable: {e}"


def go_version(binary):
    if shutil.which("go"):
        out = sh("go", "version", binary)
        if out:
            return out.split(": ", 1)[-1]
    m = re.search(rb"go1\.[0-9]+(\.[0-9]+)?", open(binary, "rb").read())
    return m.group(0).decode() if m else "?"


def file_sha256(path):
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]
    except OSError as e:
        return f"unavailable: {e}"


out, kd_bin, baselines = sys.argv[1], sys.argv[2], sys.argv[3:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
mem_kb = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
repo = os.path.dirname(os.path.abspath(__file__))
json.dump({
    "cpu_model": cpu,
    "cpus": os.cpu_count(),
    "mem_gib": round(mem_kb / 2**20, 1),
    "kernel": platform.release(),
    "rustc": sh("rustc", "--version"),
    "baselines": {b: {"go": go_version(b), "version": sh(b, "--version")} for b in baselines},
    "kd_bin": kd_bin,
    "kd_git": sh("git", "-C", repo, "describe", "--always", "--dirty"),
    "kd_bin_sha256": file_sha256(kd_bin),
    "kd_bin_mtime": datetime.datetime.fromtimestamp(
        os.path.getmtime(kd_bin), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if os.path.exists(kd_bin) else "?",
    "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
}, open(out, "w"), indent=1)
