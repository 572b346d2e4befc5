"""`recorder schema`: the JSON Schema of a recording job, for callers and their editors."""

from __future__ import annotations

import argparse
import json

from recorder.errors import ExitCode
from recorder.job import job_json_schema

HELP = "print the JSON Schema of a recording job (enum values are case-insensitive)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the schema is the same for every deployment."""


def run(args: argparse.Namespace) -> int:
    print(json.dumps(job_json_schema(), indent=2, ensure_ascii=False))
    return ExitCode.OK
