"""``python -m kafka_klaviyo_dev``: the development commands (demo, emulator)."""

from kafka_klaviyo_dev.cli import main

if __name__ == "__main__":
    main()
