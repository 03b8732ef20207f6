"""Entry point for `ray job submit`: the bulk explain job, same arguments as `medray explain`.

    ray job submit --working-dir . -- python jobs/explain.py --config configs/demo.yaml \
        --run /shared/results/demo-20261123-053822
    ray job submit --working-dir . -- python jobs/explain.py --config configs/explain_model.yaml \
        --model /shared/models/classifier.h5
"""

import sys

from medray.cli import main

sys.exit(main(["explain", *sys.argv[1:]]))
