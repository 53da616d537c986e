"""``python -m livt_core.checks``: runs the JSON list of checks on stdin (see the package)."""

import sys

from livt_core.checks.run import main

if __name__ == "__main__":
    sys.exit(main())
