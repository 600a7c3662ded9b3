import sys

from radseal.cli import main

sys.exit(main())
