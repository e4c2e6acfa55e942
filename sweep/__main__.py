import sys

from sweep.cli.main import main

sys.exit(main())
