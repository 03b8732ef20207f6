"""Entry point for `ray job submit`: the main job, same arguments as `medray run`.

    ray job submit --working-dir . -- python jobs/run.py --config configs/demo.yaml
"""

import sys

from medray.cli import main

sys.exit(main(["run", *sys.argv[1:]]))
