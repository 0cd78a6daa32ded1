import sys

from scmwatch.cli import main

sys.exit(main())
