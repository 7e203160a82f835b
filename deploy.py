#!/usr/bin/env python3
"""ekc's command line. Run from the checkout: ./deploy.py --help"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ekc.cli.main import main

if __name__ == "__main__":
    main()
