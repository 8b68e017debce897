import sys

from noisyseg.cli import main

sys.exit(main())
