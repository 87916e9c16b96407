"""``python -m kafka_klaviyo_dev.emulator``: the emulator command on its own."""

from kafka_klaviyo_dev.emulator.cli import main

if __name__ == "__main__":
    main()
