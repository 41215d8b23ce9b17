import os
import time
from pathlib import Path

from celery import shared_task
from django.conf import settings


@shared_task
def revision(gate=""):
    """The commit of the release this worker runs, read from the REVISION
    file the build wrote. With a gate (a path), the task first says it
    started (gate + ".started") and then waits for the gate to exist: the
    test holds it running across a deploy."""
    if gate:
        Path(gate + ".started").write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not Path(gate).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{gate} never opened")
            time.sleep(0.05)
    return {"commit": (settings.BASE_DIR / "REVISION").read_text().strip(), "pid": os.getpid()}
