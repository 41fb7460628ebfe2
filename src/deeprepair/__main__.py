"""`python -m deeprepair ...` is the `deeprepair` command."""

import sys

from .cli import main

sys.exit(main())
