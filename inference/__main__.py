"""`python -m inference serve [MODEL_DIR]`: see `inference.command`."""

import sys

from inference.command import main

sys.exit(main())
