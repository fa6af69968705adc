"""The course's command-line programs, each run as `python -m course_utils <command>`."""
