"""``kafka-klaviyo dlq``: read-only tools over the dead-letter topic.

``records`` parses one dead-letter record, ``selection`` picks records (the options every
``dlq`` command shares), ``reader`` reads the topic to its end as of the start, ``stats`` counts,
``render`` turns records into masked, JSON-safe documents and table rows, ``cli`` holds the
commands.
"""

from consumer.dlq.records import DeadLetterRecord, parse_record
from consumer.dlq.selection import Selection, selection_from_options, selection_options

__all__ = [
    "DeadLetterRecord",
    "Selection",
    "parse_record",
    "selection_from_options",
    "selection_options",
]
