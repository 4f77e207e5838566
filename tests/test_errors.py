"""app.errors.run_command: the one place a PoseError becomes one line and an exit status."""

import pytest

from app.errors import EXIT_INTERRUPTED, OutputError, SourceError, run_command


def test_success_returns_the_body_status(capsys):
    assert run_command(lambda: 0, debug=False) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("error_type", [SourceError, OutputError])
def test_pose_error_is_one_line_with_its_exit_code(capsys, error_type):
    def body():
        raise error_type("cannot open clip.mp4: no such file")

    assert run_command(body, debug=False) == error_type.exit_code
    err = capsys.readouterr().err
    assert err == "error: cannot open clip.mp4: no such file\n"
    assert "Traceback" not in err


def test_debug_shows_the_traceback():
    def body():
        raise SourceError("bad")

    with pytest.raises(SourceError):
        run_command(body, debug=True)


def test_interrupt_is_exit_130(capsys):
    def body():
        raise KeyboardInterrupt

    assert run_command(body, debug=False) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_other_exceptions_are_not_swallowed():
    def body():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_command(body, debug=False)
