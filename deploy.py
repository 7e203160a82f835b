#!/usr/bin/env python3
"""ekc's command line. Run from the checkout: ./deploy.py --help"""

import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Importing ekc allocates many objects and none of them is garbage: no collection while importing, then the
# imported objects are moved out of the collector's way for the rest of the run.
gc.disable()
from ekc.cli.main import main  # noqa: E402

gc.freeze()
gc.enable()

if __name__ == "__main__":
    main()
