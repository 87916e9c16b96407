"""Local stand-ins for the service's neighbours, for tests and the demo.

:class:`LocalKafka` runs a real single-node Apache Kafka broker (KRaft mode) from Maven
Central jars, so integration tests need no Docker.
"""

from consumer.devstack.kafka import LocalKafka

__all__ = ["LocalKafka"]
