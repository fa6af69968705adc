"""`python -m course_utils <command> [options]`: the course's commands (`course_utils.cli`)."""

import sys

from course_utils.cli import dispatch

if __name__ == "__main__":
    sys.exit(dispatch())
