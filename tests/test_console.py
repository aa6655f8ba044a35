"""detkit.console: a level the user chose survives detkit's own switching of its handler."""

import logging

from detkit.console import set_verbosity, show_output


def test_a_level_set_by_hand_survives_the_application_configuring_logging():
    library, saved = logging.getLogger("detkit"), logging.root.handlers[:]
    logging.root.handlers.clear()  # a script that configured no logging
    try:
        show_output()  # a loop starts: detkit prints INFO itself
        assert library.level == logging.INFO
        library.setLevel(logging.WARNING)  # the user quiets detkit, by hand
        logging.root.addHandler(logging.NullHandler())  # then configures logging
        show_output()  # the next loop
        assert library.level == logging.WARNING  # still quiet
        assert library.handlers == []
    finally:
        logging.root.handlers[:] = saved
        set_verbosity(None)
