"""`python -m lakenet ...`: the same command as the `lakenet` script (useful where only the interpreter is on PATH)."""

from lakenet.cli import main

if __name__ == "__main__":
    main()
