"""How many Python function calls a call makes: the host cost a GPU cannot take away (issue 17)."""

import sys


def count_python_calls(call) -> int:
    """Python function calls (sys.setprofile 'call' events) while call() runs, in this thread."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += event == "call"

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return count - 1  # the hook sees call() itself
