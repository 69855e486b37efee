"""``python -m harness.cli``: the ``genbench`` command (the form ``torchrun -m harness.cli ...`` needs)."""

import sys

from harness.cli import main

sys.exit(main())
