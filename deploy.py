#!/usr/bin/env python3
"""ekc's command line. Run from the checkout: ./deploy.py --help"""

import gc
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"  # made by `make demo` or `make test` (`make .venv/.installed` alone)
VENV_PYTHON = VENV / "bin" / "python"

# Run by another interpreter than the checkout's virtualenv (./deploy.py from a shell): go on in the virtualenv.
if Path(sys.prefix).resolve() != VENV.resolve() and VENV_PYTHON.is_file():
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), str(ROOT / "deploy.py"), *sys.argv[1:]])
sys.path.insert(0, str(ROOT))

# Importing ekc allocates many objects and none of them is garbage: no collection while importing, then the
# imported objects are moved out of the collector's way for the rest of the run.
gc.disable()
try:
    from ekc.cli.main import main
except ModuleNotFoundError as missing:
    print(f"deploy.py: {missing.name} is not installed for {sys.executable}: run `make .venv/.installed` in "
          f"{ROOT} (it makes .venv with ekc's packages), then ./deploy.py again", file=sys.stderr)
    sys.exit(2)

gc.freeze()
gc.enable()

if __name__ == "__main__":
    main()
