"""``python -m consumer.emulator``: the emulator command on its own."""

from consumer.emulator.cli import main

if __name__ == "__main__":
    main()
