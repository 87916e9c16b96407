"""kafka-klaviyo: Avro order-domain events from Kafka, delivered to Klaviyo.

The data flow, wired in one place (:mod:`consumer.pipeline`)::

    Kafka -> decode -> translate -> batch -> deliver -> commit / dead-letter
"""

__version__ = "0.1.0"
