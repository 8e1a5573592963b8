"""``python -m mineralseg ...``: the same as the ``mineralseg`` command."""

from mineralseg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
