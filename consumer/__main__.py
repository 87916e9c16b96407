"""``python -m consumer``: the same CLI as the ``kafka-klaviyo`` console script."""

from consumer.cli import main

if __name__ == "__main__":
    main()
