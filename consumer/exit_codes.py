"""The exit codes of every ``kafka-klaviyo`` command, in one place.

0: done (or drained and stopped on SIGTERM). 1: the input was bad data (``translate`` given an
event it cannot translate). 2: the configuration is wrong, one line names the setting. 3: a
fatal stop at runtime (Klaviyo refused the key or the request as a whole, the dead-letter topic
cannot be written or its limit was passed, an unexpected error); nothing is committed past the
unfinished work.
"""

EXIT_OK = 0
EXIT_BAD_DATA = 1
EXIT_CONFIG = 2
EXIT_FATAL = 3
