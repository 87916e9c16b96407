"""The exit codes of every ``kafka-klaviyo`` command, in one place.

0: done (or drained and stopped on SIGTERM). 1: the input was bad data (``translate`` given an
event it cannot translate). 2: the configuration is wrong, one line names the setting. 3: a
fatal stop at runtime (Klaviyo refused the key or the request as a whole, the dead-letter topic
cannot be written or its limit was passed, an unexpected error); nothing is committed past the
unfinished work.

:func:`finish` is how every long-running command ends.
"""

import logging
import os
import sys
from typing import NoReturn

EXIT_OK = 0
EXIT_BAD_DATA = 1
EXIT_CONFIG = 2
EXIT_FATAL = 3


def finish(code: int) -> NoReturn:
    """End the process with ``code`` now: logs and output flushed, no waiting for threads.

    Everything is committed or abandoned by then; delivery threads may still sit in an HTTP
    request to a hanging Klaviyo, and the interpreter would wait for them at exit."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
