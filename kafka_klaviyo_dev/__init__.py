"""Development tools for kafka-klaviyo: never shipped with the service, never imported by it.

Installed with the ``[dev]`` extra (an editable install of the repository), used by the tests,
the benchmarks and ``make demo``::

    emulator/     a local Klaviyo: Klaviyo's bulk endpoints on a real HTTP server
    kafka         a real single-node Apache Kafka broker (KRaft) from Maven Central jars
    produce       producing Avro-encoded events to a topic
    inspect       reading topics, committed offsets and lag back
    encode        Avro encoders (Confluent wire format, single-object encoding)
    samples       the guide's sample events and generated traffic
    handwritten   a hand-written OrderPlaced translation (the oracle and benchmark baseline)
    demo          the whole pipeline on this machine, end to end
    cli           ``python -m kafka_klaviyo_dev demo | emulator``
"""
