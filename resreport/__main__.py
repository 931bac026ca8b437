import sys

from resreport.cli import main

sys.exit(main())
