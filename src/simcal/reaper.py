"""Cancel a run's Dask worker jobs when the driver that submitted them is gone.

Started by ``simcal.backends.start_reaper`` as ``python reaper.py JOB_NAME USER`` in its own session, with its
stdin a pipe from the driver. It blocks reading that pipe; the read returns when the driver's end closes: on a
clean exit, on an exception, and on SIGKILL alike. Then it runs ``scancel --name JOB_NAME --user USER``, so no
worker job of that run stays queued or running. Standard library only: it must start from any interpreter.
"""

import subprocess
import sys


def main(argv: list[str]) -> int:
    job_name, user = argv[1], argv[2]
    sys.stdin.buffer.read()  # returns at EOF, i.e. when the driver is gone
    for _ in range(3):  # scancel may time out against a busy controller
        try:
            done = subprocess.run(
                ["scancel", "--name", job_name, "--user", user], capture_output=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
