"""Entry point for `ray job submit`: deploy a run's model on the cluster's Ray Serve, same arguments
as `medray serve` (the application stays deployed after the job ends; `serve shutdown` ends it).

    ray job submit --working-dir . --runtime-env-json '{"env_vars": {"MEDRAY_SERVE_TOKEN": "..."}}' \\
        -- python jobs/serve.py s3://bucket/results/demo-20261205-120000 --config configs/serve.yaml
"""

import sys

from medray.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", "--detach", *sys.argv[1:]]))
