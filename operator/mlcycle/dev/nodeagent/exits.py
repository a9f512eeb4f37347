"""What a container's exit means: the exit code and reason a runtime reports, the
termination message, and whether and when the container runs again."""

from __future__ import annotations

from mlcycle.dev.nodeagent.containerstatus import (
    REASON_COMPLETED,
    REASON_ERROR,
    REASON_OOM_KILLED,
)

# A container's terminationMessagePath (default /dev/termination-log) is a file inside its
# own filesystem; local processes share the host's, where that path is not ours to write.
# So the agent hands each container a file of its own in the state dir through this
# variable and reads the message from there: a program that writes to
# /dev/termination-log directly gets no termination message locally.
TERMINATION_MESSAGE_ENV = "MLCYCLE_TERMINATION_MESSAGE_PATH"
# Same caps as the kubelet: a termination message is at most 4 KiB, and the log fallback
# takes the last 80 lines but no more than 2 KiB of them.
TERMINATION_MESSAGE_MAX_BYTES = 4096
LOG_FALLBACK_MAX_LINES = 80
LOG_FALLBACK_MAX_BYTES = 2048

# The kubelet backs off 10s doubling to 5 minutes; locally a crash loop is usually a
# developer iterating on a script, and tests wait on restarts, so 1s doubling to 30s keeps
# the same shape at a tenth of the delay.
BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
# A container that ran this long without crashing starts its next back-off from scratch
# (the kubelet forgets a back-off entry after twice its maximum).
BACKOFF_RESET_AFTER_SECONDS = 2 * BACKOFF_MAX_SECONDS


def should_restart(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def init_should_restart(restart_policy: str, exit_code: int) -> bool:
    """An init container is retried until it succeeds unless the pod never restarts."""
    return exit_code != 0 and restart_policy != "Never"


def restart_backoff_seconds(consecutive_restarts: int) -> float:
    """Delay before the n-th consecutive restart (n >= 1): 1s, 2s, 4s, … capped at 30s."""
    if consecutive_restarts <= 0:
        return 0.0
    exponent = min(consecutive_restarts - 1, 16)
    return float(min(BACKOFF_INITIAL_SECONDS * 2**exponent, BACKOFF_MAX_SECONDS))


def exit_code_and_signal(returncode: int) -> tuple[int, int | None]:
    """Popen's returncode (negative for a signal) as a container runtime reports it."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def terminated_reason(exit_code: int, oom_killed: bool) -> str:
    if oom_killed:
        return REASON_OOM_KILLED
    return REASON_COMPLETED if exit_code == 0 else REASON_ERROR


def log_tail(log: bytes) -> str:
    lines = log.splitlines(keepends=True)[-LOG_FALLBACK_MAX_LINES:]
    tail = b"".join(lines)[-LOG_FALLBACK_MAX_BYTES:]
    return tail.decode("utf-8", errors="replace")


def termination_message(message_file: bytes, log_end: bytes, policy: str, exit_code: int) -> str:
    """What the container wrote to its termination message file, else (when its policy asks
    for it and it failed) the end of its log. `log_end` only needs to be the log's tail."""
    message = message_file[:TERMINATION_MESSAGE_MAX_BYTES].decode("utf-8", errors="replace")
    if not message.strip() and policy == "FallbackToLogsOnError" and exit_code != 0:
        return log_tail(log_end)
    return message
