import sys

from videopanda.cli import main

sys.exit(main())
