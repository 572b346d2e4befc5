"""The error catalogue: each error says what failed, whose fault it is, and whether a retry helps.

A failure webhook carries `code` and `message` (CONTRACT.md §4) and the process exit code follows
from the error's kind (§6), so every failure the worker reports is one of these.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Process exit codes (CONTRACT.md §6)."""

    OK = 0
    FAILED = 1
    INVALID_JOB = 2
    JOIN_FAILED = 3


class Fault(StrEnum):
    """Whose side the failure is on; a launcher alerts differently for each."""

    CALLER = "caller"  # the job or the caller's destination (webhook, awsDirPath) is wrong
    DEPLOYMENT = "deployment"  # configuration or infrastructure (bucket, credentials, disk)
    RECORDER = "recorder"  # a bug or a crash of ours


class RecorderError(Exception):
    """Base of every error the worker reports; `code` is stable, `message` is for people."""

    code = "INTERNAL"
    fault = Fault.RECORDER
    retryable = False
    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, local_path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Where a local copy of the recording survives (the spool), so the failure webhook and
        # the log can name it and `recorder upload` can finish the delivery later.
        self.local_path = local_path

    def as_reason(self) -> dict[str, object]:
        """The `reason` object of a recording-failed webhook."""
        reason: dict[str, object] = {
            "code": self.code,
            "message": self.message,
            "fault": str(self.fault),
        }
        if self.local_path is not None:
            reason["localPath"] = self.local_path
        return reason


class InvalidJobError(RecorderError, ValueError):
    """The job does not follow the contract; `problems` holds one line per bad field."""

    code = "INVALID_JOB"
    fault = Fault.CALLER
    exit_code = ExitCode.INVALID_JOB

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid job: " + "; ".join(problems))


class JoinError(RecorderError):
    """The room could not be joined (unreachable, refused, wrong room)."""

    code = "JOIN_FAILED"
    fault = Fault.DEPLOYMENT
    retryable = True
    exit_code = ExitCode.JOIN_FAILED


class StorageError(RecorderError):
    """The recording could not be stored at its final place; the local copy is kept."""

    code = "STORAGE_FAILED"
    fault = Fault.DEPLOYMENT
    retryable = True


class MediaError(RecorderError):
    """Encoding or muxing failed."""

    code = "MEDIA_FAILED"


class FinalizeTimeoutError(RecorderError):
    """Stopping took longer than the finalisation timeout: the run is failed as frozen."""

    code = "FINALIZE_TIMEOUT"
