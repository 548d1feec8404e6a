"""`python -m genkiln ...`: the `genkiln` command (see `genkiln.cli`)."""

import sys

from genkiln.cli import main

sys.exit(main())
