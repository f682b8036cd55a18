import sys

from covgan_utils import cli

sys.exit(cli.main())
