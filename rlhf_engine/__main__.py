import sys

from rlhf_engine.cli import main

sys.exit(main())
