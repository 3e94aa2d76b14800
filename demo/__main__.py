"""``python -m dstream.demo``: see ``dstream.demo.recovery_demo``."""
import sys

from dstream.demo.recovery_demo import main

if __name__ == "__main__":
    sys.exit(main())
