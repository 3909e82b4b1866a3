"""`python -m runner.ascend <test folder> <script> [flags]`, as scripts/ascend/launch.sh calls it."""
import sys

from runner.ascend.scripts import main

sys.exit(main(sys.argv[1:]))
