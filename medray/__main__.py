import sys

from medray.cli import main

sys.exit(main())
