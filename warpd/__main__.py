import sys

from warpd.cli import main

sys.exit(main())
