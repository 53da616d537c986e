"""``python -m livt_core train ...`` (the way the job worker and ``torchrun -m`` launch runs)."""

import sys

from livt_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
