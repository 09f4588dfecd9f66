import sys

from mark.cli import main

sys.exit(main())
