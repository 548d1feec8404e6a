"""`python -m training train|evaluate|monitor`: see `training.command`."""

import sys

from training.command import main

sys.exit(main())
