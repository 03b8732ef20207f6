"""`ray job submit -- python jobs/tune.py --config configs/demo_sweep.yaml`: a sweep as a Ray job.

The same entry point as `medray tune`; `--resume <sweep folder>` continues an interrupted sweep.
"""

import sys

from medray.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
