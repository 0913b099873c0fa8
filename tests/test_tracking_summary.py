"""The sweep summary's reasons: one line, long numbers shortened, never cut
inside a number."""
from bench.tracking.summary import shorten


def test_long_numbers_are_shortened_and_the_cut_falls_between_words():
    reason = ("ConfigError: estimator='exact' is not valid (exact: K^D = 10^20 = "
              "100000000000000000000 configurations exceed max_configs=4096; raise it)")
    assert "1e+20 configurations" in shorten(reason, width=200)
    for width in range(20, 120, 7):
        short = shorten(reason, width=width)
        assert len(short) <= width and short.endswith("…")
        whole = shorten(reason, width=200).split()
        # every word kept is a whole word of the full reason: no cut inside a number
        assert short[:-1].split() == whole[:len(short[:-1].split())]


def test_short_reasons_are_left_alone_on_one_line():
    assert shorten("boom\n  at step 3") == "boom at step 3"
