import sys

from mlcycle.dev.nodeagent.command import main

sys.exit(main())
